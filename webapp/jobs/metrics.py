"""A job's metrics as people read them: a label with its unit, and a formatted value. REST keeps the raw values
(``metrics``); the pages and the live updates show these rows (``metrics_display`` of ``job_state``)."""

from __future__ import annotations

import json


def format_bytes(value) -> str:
    """1536 -> "1.5 KiB"."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_seconds(value) -> str:
    """0.25 -> "0.25 s", 75 -> "1 min 15 s", 4000 -> "1 h 6 min"."""
    seconds = float(value)
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_number(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return str(value)


def _by_coder(value) -> str:
    if not isinstance(value, dict):
        return format_number(value)
    return ", ".join(f"{coder} {format_bytes(n)}" for coder, n in sorted(value.items(), key=lambda kv: -kv[1]))


def _verification(value) -> str:
    if not isinstance(value, dict):
        return format_number(value)
    text = f"{value.get('status', '')} ({value.get('checked', 0)} files checked)"
    if value.get("mismatched"):
        text += f"; differ: {', '.join(value['mismatched'][:5])}"
    if value.get("reason"):
        text += f": {value['reason']}"
    return text


# key -> (label with unit, formatter). Order here is the order shown.
METRICS: dict[str, tuple[str, object]] = {
    "elapsed_s": ("elapsed", format_seconds),
    "eta_s": ("estimated time left", format_seconds),
    "ratio": ("ratio (original / artifact)", lambda v: f"{float(v):.3f}×"),
    "original_bytes": ("original size", format_bytes),
    "compressed_bytes": ("artifact size", format_bytes),
    "bytes_written": ("restored size", format_bytes),
    "mb_per_s": ("throughput (MB/s)", lambda v: f"{float(v):,.1f} MB/s"),
    "tokens_per_s": ("throughput (tokens/s)", lambda v: f"{float(v):,.0f} tokens/s"),
    "seconds": ("duration", format_seconds),
    "peak_rss_bytes": ("peak memory (RSS) during the job", format_bytes),
    "perplexity": ("perplexity", lambda v: f"{float(v):.4f}"),
    "nll": ("mean negative log-likelihood (nats/token)", lambda v: f"{float(v):.4f}"),
    "tokens": ("tokens evaluated", format_number),
    "windows": ("windows", format_number),
    "tensors": ("tensors", format_number),
    "deduplicated_tensors": ("deduplicated tensors", format_number),
    "files": ("files", format_number),
    "bytes_by_coder": ("bytes by coder", _by_coder),
    "verification": ("verification", _verification),
    "verified": ("verified", format_number),
    "lossless": ("lossless", format_number),
    "artifact_id": ("artifact", lambda v: f"#{v}"),
    "identical_artifact_id": ("identical to artifact (not stored twice)", lambda v: f"#{v}"),
    "output_dir": ("restored to", str),
}


def metric_rows(metrics: dict | None) -> list[dict]:
    """``[{"key", "label", "text"}]`` for a job's metrics: known keys in a fixed order with their units, then the
    others by name (``*_bytes`` as sizes, ``*_s`` as durations)."""
    metrics = metrics or {}
    rows = []
    for key in [k for k in METRICS if k in metrics] + sorted(k for k in metrics if k not in METRICS):
        value = metrics[key]
        label, fmt = METRICS.get(key, (key.replace("_", " "), None))
        if fmt is None:
            if key.endswith("_bytes") and isinstance(value, (int, float)):
                fmt = format_bytes
            elif key.endswith("_s") and isinstance(value, (int, float)):
                fmt = format_seconds
            else:
                fmt = format_number
        try:
            text = fmt(value)
        except (TypeError, ValueError):
            text = format_number(value)
        rows.append({"key": key, "label": label, "text": text})
    return rows
