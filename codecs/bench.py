"""``modelcodecs bench``: every lossless codec on the same pairs, side by side.

For each case (synthetic pairs in fp32/bf16 at several delta sigmas, a 90%-unchanged pair, bf16 weights stored as
fp32, a tiny transformer fine-tuned by AdamW, or a pair you give with ``--pair BASE FT``) and each registered
lossless codec, on the same bytes in the same run:

* ``ratio``   -- fine-tuned folder bytes (every file) / artifact file bytes (``compress_model``; the contract's ratio);
* ``payload`` -- tensor bytes / codec payload bytes (``encode_tensor`` on in-memory tensors; no container, no
  index, no non-tensor files);
* ``vs bound`` -- for fmdelta, its payload / the order-0 entropy of the reference FM-Delta symbols plus raw bits
  (``modelcodecs.fmdelta.symbol_entropy_bound``, summed over tensors);
* MB/s of compress and decompress, end to end (``compress_model``/``decompress_model``, files, hashing and
  container included) and at the codec level (``encode_tensor``/``decode_tensor`` in memory), at each thread
  count (default 1 and 2); M elements/s at the codec level;
* peak RSS of end-to-end compress and decompress, each run in a fresh process (its VmHWM, about 40 MB of which
  is the interpreter and imports); the codec-level peak is sampled in the benchmark process itself.

Run ``modelcodecs bench --help`` for the options; ``--quick`` uses tiny sizes, ``--json`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from .abc import FLOAT_DTYPES, TensorSpec
from .errors import ConfigError

MB = 1e6

# (label, config) of the codecs benchmarked besides the registered codecs' defaults
CODEC_VARIANTS = {"zstd": [("zstd-1", {"id": "zstd", "level": 1}), ("zstd-3", {"id": "zstd", "level": 3})]}

# name, dtype, delta sigma, unchanged fraction, stored_as
SYNTHETIC_CASES = [
    ("fp32 ds=1e-5", "F32", 1e-5, 0.0, None),
    ("fp32 ds=1e-4", "F32", 1e-4, 0.0, None),
    ("fp32 ds=1e-3", "F32", 1e-3, 0.0, None),
    ("fp32 ds=1e-4 90% unchanged", "F32", 1e-4, 0.9, None),
    ("bf16 ds=1e-5", "BF16", 1e-5, 0.0, None),
    ("bf16 ds=1e-4", "BF16", 1e-4, 0.0, None),
    ("bf16 ds=1e-3", "BF16", 1e-3, 0.0, None),
    ("bf16-as-fp32 ds=1e-4", "BF16", 1e-4, 0.0, "F32"),
]


# -- measuring ------------------------------------------------------------------------------------------------------

class RssSampler:
    """Peak resident set size of this process while the ``with`` block runs (polled from /proc/self/statm)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    from ._threads import usable_cores

    return {"cpu": cpu, "usable_cores": usable_cores(), "python": platform.python_version(),
            "platform": platform.platform()}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _lossless_codecs(only: list[str] | None) -> list[tuple[str, dict]]:
    from .registry import list_codecs

    out = []
    for cls in list_codecs():
        if not cls.lossless or cls.needs_prior:
            continue
        for label, config in CODEC_VARIANTS.get(cls.codec_id, [(cls.codec_id, {"id": cls.codec_id})]):
            if only is None or label in only or cls.codec_id in only:
                out.append((label, config))
    if not out:
        raise ConfigError(f"no lossless codec matches {only}")
    return out


def _load_tensors(ft_dir: Path, base_dir: Path) -> list[tuple[TensorSpec, bytearray, bytearray | None]]:
    """Every named tensor of the fine-tune with its base twin (same name, dtype and shape) when there is one."""
    from .hfio import ModelFolder

    out = []
    with ModelFolder(ft_dir) as tuned, ModelFolder(base_dir) as base:
        for ref in tuned.iter_tensors():
            if not ref.named:
                continue
            twin = base.tensors.get(ref.name)
            base_bytes = base.read_tensor(twin) if twin is not None and twin.spec.dtype == ref.spec.dtype \
                and twin.spec.shape == ref.spec.shape else None
            out.append((ref.spec, tuned.read_tensor(ref), base_bytes))
    return out


def _bound(tensors) -> float | None:
    from .fmdelta import symbol_entropy_bound

    total, seen = 0.0, False
    for spec, data, base in tensors:
        if spec.dtype in FLOAT_DTYPES and base is not None and spec.dtype in ("F16", "BF16", "F32", "F64"):
            total += symbol_entropy_bound(data, base, spec.dtype)
            seen = True
        else:
            total += spec.nbytes  # not coded by FM-Delta's symbols: count it at full size
    return total if seen else None


def _best(fn, repeat: int, cpu: list | None = None) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs; with ``cpu`` (a list), also append the best process CPU time."""
    best, best_cpu, result = math.inf, math.inf, None
    for _ in range(repeat):
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    if cpu is not None:
        cpu.append(best_cpu)
    return best, result


def _codec_level(codec, tensors, threads: int, repeat: int) -> dict:
    """encode_tensor/decode_tensor on in-memory tensors: seconds, payload bytes, and a byte-exact check."""
    def encode():
        return [list(codec.encode_tensor(spec, memoryview(data), None if base is None else memoryview(base),
                                         threads=threads)) for spec, data, base in tensors]

    cpu: list[float] = []
    with RssSampler() as enc_rss:
        enc_s, encoded = _best(encode, repeat, cpu)
    outs = [bytearray(spec.nbytes) for spec, _, _ in tensors]

    def decode():
        for (spec, _, base), chunks, out in zip(tensors, encoded, outs):
            codec.decode_tensor(spec, chunks, None if base is None else memoryview(base), memoryview(out),
                                threads=threads)

    with RssSampler() as dec_rss:
        dec_s, _ = _best(decode, repeat, cpu)
    exact = all(out == data for out, (_, data, _) in zip(outs, tensors))
    payload = sum(len(c.payload) for chunks in encoded for c in chunks)
    coders: dict[str, int] = {}
    for chunks in encoded:
        for c in chunks:
            coders[c.coder] = coders.get(c.coder, 0) + len(c.payload)
    return {"encode_s": enc_s, "decode_s": dec_s, "encode_cpu_s": cpu[0], "decode_cpu_s": cpu[1],
            "payload_bytes": payload, "exact": exact, "coders": coders,
            "encode_rss": enc_rss.peak, "decode_rss": dec_rss.peak}


def _child_main(argv: list[str]) -> None:
    """Run in a fresh process by :func:`_end_to_end`: one compress or decompress, best of ``repeat``; prints JSON
    with the seconds and this process's own peak RSS (VmHWM)."""
    from . import compress_model, decompress_model

    step, args = argv[0], json.loads(argv[1])
    artifact, restored = Path(args["artifact"]), Path(args["restored"])

    def compress():
        if artifact.exists():
            artifact.unlink()
        return compress_model(args["ft"], artifact, codec=args["config"], base_dir=args["base"],
                              threads=args["threads"]).as_dict()

    def decompress():
        shutil.rmtree(restored, ignore_errors=True)
        return decompress_model(artifact, restored, base_dir=args["base"], threads=args["threads"]).as_dict()

    seconds, summary = _best(compress if step == "compress" else decompress, args["repeat"])
    print(json.dumps({"seconds": seconds, "summary": summary, "peak_rss": _own_peak_rss()}, default=str))


def _own_peak_rss() -> int:
    """This process's RSS high-water mark. VmHWM, not ru_maxrss: after fork + exec ru_maxrss still carries the
    parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run_child(step: str, args: dict) -> dict:
    import subprocess

    code = "import sys; from modelcodecs.bench import _child_main; _child_main(sys.argv[1:])"
    proc = subprocess.run([sys.executable, "-c", code, step, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench: {step} of {args['config']} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _end_to_end(config: dict, base_dir: Path, ft_dir: Path, work: Path, threads: int, repeat: int) -> dict:
    """compress_model then decompress_model, each in a fresh process (so its peak RSS is its own)."""
    artifact = work / "artifact.dvz"
    restored = work / "restored"
    args = {"config": config, "base": str(base_dir), "ft": str(ft_dir), "artifact": str(artifact),
            "restored": str(restored), "threads": threads, "repeat": repeat}
    try:
        comp = _run_child("compress", args)
        dec = _run_child("decompress", args)
        size = artifact.stat().st_size
    finally:
        if artifact.exists():
            artifact.unlink()
        shutil.rmtree(restored, ignore_errors=True)
    return {"compress_s": comp["seconds"], "decompress_s": dec["seconds"], "artifact_bytes": size,
            "original_bytes": comp["summary"]["original_bytes"], "verified": bool(dec["summary"]["verified"]),
            "compress_rss": comp["peak_rss"], "decompress_rss": dec["peak_rss"]}


def bench_case(name: str, base_dir: Path, ft_dir: Path, *, codecs: list[tuple[str, dict]], threads: list[int],
               repeat: int, work: Path, info: dict | None = None, log=print) -> dict:
    from . import get_codec

    original = sum(p.stat().st_size for p in Path(ft_dir).rglob("*") if p.is_file())
    e2e: dict[str, dict] = {}
    for label, config in codecs:  # end to end first, before the tensors are held in memory
        for t in threads:
            log(f"  {name}: {label} end to end, {t} thread(s)")
            e2e[(label, t)] = _end_to_end(config, Path(base_dir), Path(ft_dir), work, t, repeat)
    tensors = _load_tensors(Path(ft_dir), Path(base_dir))
    tensor_bytes = sum(spec.nbytes for spec, _, _ in tensors)
    elements = sum(spec.numel for spec, _, _ in tensors)
    tensor_count = len(tensors)
    dtypes = sorted({spec.dtype for spec, _, _ in tensors})
    log(f"  {name}: order-0 bound")
    bound = _bound(tensors)
    rows = []
    for label, config in codecs:
        codec = get_codec(config)
        row = {"codec": label, "config": codec.get_config(), "threads": {}}
        for t in threads:
            log(f"  {name}: {label} codec level, {t} thread(s)")
            level = _codec_level(codec, tensors, t, repeat)
            end = e2e[(label, t)]
            row["threads"][str(t)] = {
                "e2e_compress_mb_s": end["original_bytes"] / MB / end["compress_s"],
                "e2e_decompress_mb_s": end["original_bytes"] / MB / end["decompress_s"],
                "codec_encode_mb_s": tensor_bytes / MB / level["encode_s"],
                "codec_decode_mb_s": tensor_bytes / MB / level["decode_s"],
                "codec_encode_melem_s": elements / 1e6 / level["encode_s"],
                "codec_decode_melem_s": elements / 1e6 / level["decode_s"],
                # per CPU-second of this process: the per-core speed, robust to other processes on the machine
                "codec_encode_melem_cpu_s": elements / 1e6 / max(level["encode_cpu_s"], 1e-9),
                "codec_decode_melem_cpu_s": elements / 1e6 / max(level["decode_cpu_s"], 1e-9),
                "peak_rss_compress_mb": end["compress_rss"] / MB,
                "peak_rss_decompress_mb": end["decompress_rss"] / MB,
                "peak_rss_codec_mb": max(level["encode_rss"], level["decode_rss"]) / MB,
            }
            row.update(artifact_bytes=end["artifact_bytes"], original_bytes=end["original_bytes"],
                       ratio=end["original_bytes"] / end["artifact_bytes"], payload_bytes=level["payload_bytes"],
                       payload_ratio=tensor_bytes / level["payload_bytes"] if level["payload_bytes"] else math.inf,
                       lossless_ok=bool(level["exact"] and end["verified"]), bytes_by_coder=level["coders"])
        row["vs_bound"] = row["payload_bytes"] / bound if bound and label == "fmdelta" else None
        rows.append(row)
    del tensors
    return {"name": name, "base": str(base_dir), "finetuned": str(ft_dir), "dtypes": dtypes, "elements": elements,
            "tensors": tensor_count, "tensor_bytes": tensor_bytes, "original_bytes": original, "bound_bytes": bound,
            "bound_ratio": tensor_bytes / bound if bound else None, "info": info or {}, "rows": rows}


# -- targets --------------------------------------------------------------------------------------------------------

def check_targets(cases: list[dict], threads: list[int]) -> list[dict]:
    """The FM-Delta targets, from measured figures: ratio vs bound, bf16-as-fp32 vs bf16, speed per core and on
    2 threads (codec level); the 2-thread / 1-thread ratio is reported with them (``ok`` None)."""
    out = []

    def fm(case):
        return next((r for r in case["rows"] if r["codec"] == "fmdelta"), None)

    by_name = {c["name"]: c for c in cases}
    for case in cases:
        row = fm(case)
        if row is None or row["vs_bound"] is None or case["info"].get("kind") != "synthetic":
            continue
        stored = case["info"].get("stored_as")
        if case["info"].get("dtype") == "F32" and stored == "F32":
            out.append({"target": f"{case['name']}: fmdelta payload <= 1.005x bound", "value": row["vs_bound"],
                        "limit": 1.005, "ok": row["vs_bound"] <= 1.005})
        elif case["info"].get("dtype") == "BF16" and stored == "BF16":
            out.append({"target": f"{case['name']}: fmdelta payload <= 0.90x bound", "value": row["vs_bound"],
                        "limit": 0.90, "ok": row["vs_bound"] <= 0.90})
        elif case["info"].get("dtype") == "BF16" and stored == "F32":
            twin = by_name.get(case["name"].replace("bf16-as-fp32", "bf16"))
            if twin is not None and fm(twin):
                rel = row["payload_bytes"] / fm(twin)["payload_bytes"]
                out.append({"target": f"{case['name']}: fmdelta payload within 5% of {twin['name']}",
                            "value": rel, "limit": 1.05, "ok": rel <= 1.05})
    # speed over the synthetic cases (large tensors: several chunks per tensor, so threads have work to share);
    # given pairs and the tiny transformer are in the tables
    speeds = [(c["name"], fm(c)) for c in cases if fm(c) is not None and c["info"].get("kind") == "synthetic"]
    if speeds and "1" in speeds[0][1]["threads"]:
        for key, what in (("codec_encode_melem_s", "encode"), ("codec_decode_melem_s", "decode")):
            cpu_key = key.replace("_s", "_cpu_s")
            per_core = cpu_key in speeds[0][1]["threads"]["1"]
            if per_core:
                worst = min(speeds, key=lambda s: s[1]["threads"]["1"][cpu_key])
                value = worst[1]["threads"]["1"][cpu_key]
                out.append({"target": f"fmdelta {what} >= 75 M elements per CPU-second on 1 thread (slowest "
                                      f"case: {worst[0]})", "value": value, "limit": 75.0, "ok": value >= 75.0})
            worst = min(speeds, key=lambda s: s[1]["threads"]["1"][key])
            value = worst[1]["threads"]["1"][key]
            out.append({"target": f"fmdelta {what} >= 75 M elements/s wall clock on 1 thread (slowest case: "
                                  f"{worst[0]})", "value": value, "limit": 75.0, "ok": value >= 75.0})
            if "2" in worst[1]["threads"]:
                slowest = min(speeds, key=lambda s: s[1]["threads"]["2"][key])
                value = slowest[1]["threads"]["2"][key]
                out.append({"target": f"fmdelta {what} on 2 threads >= 1.7 x 75 M elements/s wall clock (slowest "
                                      f"case: {slowest[0]})", "value": value, "limit": 127.5, "ok": value >= 127.5})
                # the ratio to this run's own 1-thread figure is reported, not judged: it depends on how many chunks
                # each tensor has and on the two cores being equally fast (bench/RESULTS.md)
                ratios = sorted(s[1]["threads"]["2"][key] / s[1]["threads"]["1"][key] for s in speeds)
                out.append({"target": f"fmdelta {what} 2 threads / 1 thread, wall clock (worst case; median "
                                      f"{ratios[len(ratios) // 2]:.2f})", "value": ratios[0], "limit": None,
                            "ok": None})
    return out


# -- output ---------------------------------------------------------------------------------------------------------

def format_case(case: dict, threads: list[int]) -> str:
    ts = "/".join(str(t) for t in threads)
    head = (f"### {case['name']}  ({', '.join(case['dtypes'])}; {case['elements'] / 1e6:.2f} M elements in "
            f"{case['tensors']} tensors; folder {case['original_bytes'] / MB:.1f} MB")
    if case["bound_bytes"]:
        head += f"; order-0 bound ratio {case['bound_ratio']:.4f}"
    head += ")"
    cols = ["codec", "ratio (file)", "ratio (payload)", "vs bound", f"e2e comp MB/s {ts}T", f"e2e dec MB/s {ts}T",
            f"codec enc MB/s {ts}T", f"codec dec MB/s {ts}T", f"codec enc/dec Melem per CPU-s {threads[0]}T",
            "peak RSS MB comp/dec",
            "exact"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in case["rows"]:
        def per(key, fmt="{:.0f}"):
            return " / ".join(fmt.format(row["threads"][str(t)][key]) for t in threads)

        last = row["threads"][str(threads[-1])]
        cells = [row["codec"], f"{row['ratio']:.4f}", f"{row['payload_ratio']:.4f}",
                 f"{row['vs_bound']:.4f}" if row["vs_bound"] else "-",
                 per("e2e_compress_mb_s"), per("e2e_decompress_mb_s"), per("codec_encode_mb_s"),
                 per("codec_decode_mb_s"),
                 "{:.1f} / {:.1f}".format(row["threads"][str(threads[0])]["codec_encode_melem_cpu_s"],
                                          row["threads"][str(threads[0])]["codec_decode_melem_cpu_s"]),
                 f"{last['peak_rss_compress_mb']:.0f} / {last['peak_rss_decompress_mb']:.0f}",
                 "yes" if row["lossless_ok"] else "NO"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    threads = report["threads"]
    parts = [f"modelcodecs bench  {report['date']}  {report['machine']['cpu']} "
             f"({report['machine']['usable_cores']} usable cores; load average {report['load_average_start']} at "
             f"the start, {report['load_average_end']} at the end)",
             "ratio (file) = fine-tuned folder bytes / artifact file bytes; ratio (payload) = tensor bytes / codec "
             "payload bytes; vs bound = fmdelta payload / order-0 bound of the reference symbols; e2e = "
             "compress_model/decompress_model (files, hashes, container); codec = encode_tensor/decode_tensor in "
             "memory; Melem per CPU-s = million elements per CPU-second of the benchmark process (per-core speed, "
             "little affected by other processes); MB = 10^6 bytes of the original; peak RSS = VmHWM of the fresh "
             "process that ran compress_model / decompress_model.", ""]
    for case in report["cases"]:
        parts += [format_case(case, threads), ""]
    if report.get("command_cases"):
        from .bench_cli import format_cases

        parts.append(format_cases(report["command_cases"]))
    if report["targets"]:
        parts += ["### FM-Delta targets", ""]
        for t in report["targets"]:
            if t["ok"] is None:
                parts.append(f"- NOTE {t['target']}: {t['value']:.4f}")
            else:
                verdict = "MET " if t["ok"] else "MISSED"
                parts.append(f"- {verdict} {t['target']}: {t['value']:.4f} (limit {t['limit']})")
    return "\n".join(parts)


# -- driver ---------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelcodecs bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group()
    what.add_argument("--pair", nargs=2, metavar=("BASE", "FT"), help="benchmark this base/fine-tune pair only")
    what.add_argument("--synthetic", action="store_true", help="synthetic pairs only (no tiny transformer)")
    what.add_argument("--tiny", action="store_true", help="the tiny fine-tuned transformer only")
    what.add_argument("--cli", action="store_true", help="whole `modelcodecs` commands against the zstd command "
                      "line on one file, 1 thread (modelcodecs.bench_cli)")
    what.add_argument("--smollm2", action="store_true", help="real SmolLM2-135M and a fine-tune of it: 1 vs 2 "
                      "threads end to end, 1%% added vocabulary (modelcodecs.bench_cli)")
    p.add_argument("--smollm2-dir", default=None, help="where the SmolLM2 pair is written once and reused "
                   "(default: under the work folder)")
    p.add_argument("--smollm2-steps", type=int, default=3, help="AdamW steps of the SmolLM2 fine-tune")
    what.add_argument("--bitdelta", nargs=4, metavar=("BASE", "FT", "TRAIN", "HELDOUT"),
                      help="BitDelta's size, quality, speed and memory on this pair and text (see --bd-*)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests and smoke runs)")
    p.add_argument("--elements", type=int, default=None, help="elements per synthetic case (default 16 Mi; "
                   "quick: 64 Ki)")
    p.add_argument("--tensors", type=int, default=None, help="tensors per synthetic case (default: one per Mi "
                   "elements, at most 8; fewer, larger tensors give the threads more chunks per tensor)")
    p.add_argument("--cases", default=None, help="comma-separated substrings: keep synthetic cases whose name "
                   "contains one of them (e.g. 'fp32 ds=1e-4,bf16')")
    p.add_argument("--codecs", default=None, help="comma-separated codec labels or ids (default: every lossless "
                   "codec; zstd at levels 1 and 3)")
    p.add_argument("--threads", default="1,2", help="thread counts to measure (default 1,2)")
    p.add_argument("--repeat", type=int, default=None, help="runs per measurement, best kept (default 2; quick 1)")
    p.add_argument("--tiny-steps", type=int, default=30, help="AdamW fine-tuning steps of the tiny transformer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where pairs and artifacts go (default: a temporary folder, "
                   "removed afterwards)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write the results as JSON to PATH (or to stdout, instead of the tables, when no PATH)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    nobase = p.add_argument_group("checkpoints without a base (modelcodecs.bench_nobase)")
    nobase.add_argument("--nobase", action="store_true", help="SmolLM2-135M coded without a base: fmdelta-nobase, "
                        "zstd and lmz as whole commands at 1 thread, with the order-0 and context-model bounds")
    nobase.add_argument("--nobase-dtypes", default="BF16,F32", help="SmolLM2 dtypes for --nobase (default BF16,F32)")
    nobase.add_argument("--lmz", default=None, help="the lmz command (PyPI lmzip; default: lmz on PATH)")
    nobase.add_argument("--series", action="store_true", help="a real training run (modelcodecs.bench_series) "
                        "coded as a series, by lmz on the directory and by zstd")
    nobase.add_argument("--series-model", default="smollm2-135m", choices=("smollm2-135m", "llama-scratch"),
                        help="the pretrained SmolLM2-135M continued, or a small Llama with its tokenizer trained "
                        "from scratch (default smollm2-135m)")
    nobase.add_argument("--series-hidden", type=int, default=128, help="llama-scratch width (default 128)")
    nobase.add_argument("--series-layers", type=int, default=4, help="llama-scratch decoder layers (default 4)")
    nobase.add_argument("--series-dtype", default="BF16", choices=("BF16", "F32"), help="checkpoint dtype")
    nobase.add_argument("--series-steps", type=int, default=200, help="training steps for --series (default 200)")
    nobase.add_argument("--series-every", type=int, default=20, help="steps between checkpoints (default 20)")
    nobase.add_argument("--keyframe-every", type=int, default=8, help="series keyframe interval (default 8)")
    store = p.add_argument_group("models stored once per team (modelcodecs.bench_tensorstore)")
    store.add_argument("--tensorstore", action="store_true", help="bytes on disk of a tensor store holding SmolLM2-"
                       "135M bf16 twice, and with a fine-tune of its last layers, against the logical bytes")
    store.add_argument("--tensorstore-layers", type=int, default=4, help="decoder layers the fine-tune trains")
    store.add_argument("--tensorstore-steps", type=int, default=2, help="AdamW steps of that fine-tune")
    from .bitdelta.bench import add_arguments

    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> dict:
    threads = [int(t) for t in str(args.threads).split(",") if t.strip()]
    if not threads or any(t < 1 for t in threads):
        raise ConfigError("--threads takes positive integers, e.g. 1,2")
    repeat = args.repeat or (1 if args.quick else 2)
    elements = args.elements or ((1 << 16) if args.quick else (16 << 20))
    tensors = args.tensors or max(1, min(8, elements // (1 << 20)))
    if elements < 1 or repeat < 1 or not 1 <= tensors <= elements:
        raise ConfigError("--elements and --repeat must be positive, --tensors between 1 and --elements")
    codecs = _lossless_codecs(args.codecs.split(",") if args.codecs else None)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    from . import synthetic

    load_start = _load()
    owned = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="modelcodecs-bench-") if owned else args.workdir)
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    if args.cli or args.smollm2:
        from . import bench_cli

        try:
            if args.cli:
                elements = args.elements or ((1 << 20) if args.quick else (64 << 20))
                # --quick: a miniature of the layout (2 layers, 2048-row vocabulary)
                layout = synthetic.smollm2_layout(**({"layers": 2, "vocab": 2048} if args.quick else {}))
                cases.append(bench_cli.cli_case(root, elements=elements, tensors=args.tensors or 8, repeat=repeat,
                                                seed=args.seed, layout=layout, log=log))
            else:
                cases.append(bench_cli.smollm2_case(Path(args.smollm2_dir or root / "smollm2"), root, repeat=repeat,
                                                    steps=args.smollm2_steps, log=log))
        finally:
            if owned:
                shutil.rmtree(root, ignore_errors=True)
        return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                "load_average_start": load_start, "load_average_end": _load(),
                "command": "modelcodecs bench " + " ".join(args.argv), "threads": threads, "repeat": repeat,
                "cases": [], "command_cases": cases, "targets": []}
    try:
        plans = []
        if args.pair:
            plans.append(("pair", Path(args.pair[0]), Path(args.pair[1]), {"kind": "pair"}))
        if not args.pair and not args.tiny:
            wanted = [w.strip() for w in args.cases.split(",")] if args.cases else None
            for i, (name, dtype, sigma, unchanged, stored) in enumerate(SYNTHETIC_CASES):
                if wanted and not any(w in name for w in wanted):
                    continue
                log(f"generating {name} ({elements} elements)")
                # bf16-as-fp32 uses the bf16 case's seed: same values, wider storage
                seed = args.seed + (SYNTHETIC_CASES.index(next(c for c in SYNTHETIC_CASES if c[1] == dtype and
                                                               c[2] == sigma and c[3] == unchanged and not c[4]))
                                    if stored else i)
                pair = synthetic.make_synthetic_pair(root / f"case{i}", dtype=dtype, n_elements=elements,
                                                     delta_sigma=sigma, unchanged_fraction=unchanged, seed=seed,
                                                     stored_as=stored,
                                                     n_tensors=tensors)
                plans.append((name, pair.base, pair.finetuned, {"kind": "synthetic", **pair.info}))
        tiny = not args.pair and not args.synthetic
        if tiny and not args.tiny:
            import importlib.util

            if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
                log("skipping the tiny transformer: torch/transformers are not installed (pip install "
                    "'deltavault[models]')")
                tiny = False
        if tiny:
            log("training the tiny transformer pair")
            kw = dict(steps=3, base_steps=3, d_model=32, n_layer=1) if args.quick else \
                dict(steps=args.tiny_steps, d_model=128, n_layer=4)
            pair = synthetic.make_tiny_transformer_pair(root / "tiny", seed=args.seed, **kw)
            plans.append((f"tiny Llama fp32, {kw['steps']} AdamW steps", pair.base, pair.finetuned,
                          {"kind": "tiny-transformer", **pair.info}))
        work = root / "work"
        work.mkdir(exist_ok=True)
        for name, base, ft, info in plans:
            log(f"benchmarking {name}")
            cases.append(bench_case(name, base, ft, codecs=codecs, threads=threads, repeat=repeat, work=work,
                                    info=info, log=log))
            if info["kind"] == "synthetic" and owned:
                shutil.rmtree(Path(base).parent, ignore_errors=True)
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "load_average_start": load_start, "load_average_end": _load(),
            "command": "modelcodecs bench " + " ".join(args.argv), "threads": threads, "repeat": repeat,
            "elements_per_synthetic_case": elements, "tensors_per_synthetic_case": tensors,
            "codecs": [{"label": lab, "config": cfg} for lab, cfg in codecs],
            "cases": cases, "targets": check_targets(cases, threads)}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lossy"]:  # hyper and rtn: bits per weight against quality (modelcodecs.bench_lossy)
        from . import bench_lossy

        return bench_lossy.main(argv[1:])
    if any(a == "--gradients" or a.startswith("--gradients=") for a in argv):  # gradient sets: LM-GC's bench
        from .lmgc import bench as gradient_bench

        return gradient_bench.main(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.nobase:
        from . import bench_nobase

        return bench_nobase.main(args)
    if args.series:
        from . import bench_series

        return bench_series.main(args)
    if args.tensorstore:
        from . import bench_tensorstore

        return bench_tensorstore.main(args)
    if args.bitdelta:
        from .bitdelta.bench import format_bitdelta, run_bitdelta

        report = run_bitdelta(args, lambda msg: args.quiet or print(msg, file=sys.stderr, flush=True))
        print(json.dumps(report, indent=2, default=str) if args.json == "-" else format_bitdelta(report))
        if args.json and args.json != "-":
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        return 0
    report = run(args)
    if args.json == "-":
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


__all__ = ["RssSampler", "bench_case", "check_targets", "format_report", "main", "run"]
