"""``modelcodecs bench lossy``: bits per weight against quality for ``hyper`` (weights and delta mode) and ``rtn``
at the same bits per weight, on a real pair, plus encode/decode speed against a plain numpy round-to-nearest of
the same tensor in the same run.

For each codec config the fine-tune is compressed (``compress_model``), restored (``decompress_model``) and scored
on held-out data with :mod:`modelcodecs.evaluate`; the original fine-tune is scored once. Reported per config:

* ``bits/weight`` -- 8 x (every byte of the artifact file: payloads, side information, index, tensors kept
  lossless, non-tensor files) / the number of weights of the checkpoint (every element of every tensor);
* ``ratio`` -- fine-tuned folder bytes / artifact bytes (the one ratio of the project);
* ``rel. error`` -- ||w - w'|| / ||w|| over the quantised tensors (the codec's ``encode_report``);
* the quality metrics, original -> restored (delta).

The causal-LM pair (default) is SmolLM2-135M-Instruct (``modelcodecs.packaged``) as the base, fine-tuned for a
few AdamW steps on the training half of the Python docs corpus (``--steps``); perplexity and next-token top-1
accuracy on the held-out half. ``--classifier BASE FT DATA`` benchmarks a sequence-classification pair on a
labelled CSV/JSONL file instead (accuracy, macro-F1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import ConfigError

# bits per weight -> (n, M) with (n + 1)(M + 1) a power of two: n + 1 = T^2 fills the lattice, M = 3 rings
HYPER_AT_BITS = {3: (15, 3), 4: (63, 3), 5: (255, 3), 6: (1023, 3), 8: (16383, 3)}
BITS = (3, 4, 5, 6, 8)
# the speed rows: rtn and hyper at 3, 5 and 8 bits per weight (byte-aligned and odd index widths), auto_l on
SPEED_CONFIGS = tuple((f"rtn-{b}", {"id": "rtn", "bits": b}) for b in (3, 5, 8)) + tuple(
    (f"hyper-{b} (n={HYPER_AT_BITS[b][0]}, M=3)", {"id": "hyper", "n": HYPER_AT_BITS[b][0], "M": 3, "auto_l": True})
    for b in (3, 5, 8))


def configs(bits: tuple[int, ...] = BITS, delta: bool = True) -> list[tuple[str, dict]]:
    """(label, codec config) of every lossy config benchmarked, plus the paper's LLaMA setting."""
    out = []
    modes = (False, True) if delta else (False,)
    for on_delta in modes:
        tag = "delta" if on_delta else "weights"
        for b in bits:
            n, m = HYPER_AT_BITS[b]
            out.append((f"hyper-{tag}-{b}", {"id": "hyper", "n": n, "M": m, "auto_l": True, "on_delta": on_delta}))
            out.append((f"rtn-{tag}-{b}", {"id": "rtn", "bits": b, "on_delta": on_delta}))
    out.append(("hyper-paper-llama", {"id": "hyper", "l": 0.1, "n": 1600, "M": 3, "max_error": 0.006}))
    return out


def _count_weights(model_dir: Path) -> int:
    from .hfio import ModelFolder

    with ModelFolder(model_dir) as folder:
        return sum(ref.spec.numel for ref in folder.tensors.values())


def finetune_causal_lm(base_dir: Path, train_text: Path, out_dir: Path, *, steps: int, lr: float = 2e-5,
                       seq_len: int = 128, batch: int = 4, seed: int = 0) -> Path:
    """A real fine-tune for the benchmark: ``steps`` AdamW steps of next-token loss on ``train_text``, saved as a
    safetensors folder with the base's tokenizer (reused when already there)."""
    if (out_dir / "model.safetensors").is_file():
        return out_dir
    import torch

    from ._torch import load_model, load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(base_dir)
    model = load_model(base_dir, device="cpu", dtype="float32").train()
    ids = tokenizer(train_text.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - seq_len - 1, batch)
        x = torch.tensor([ids[s:s + seq_len] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval().save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def speed(shape: tuple[int, int] = (4096, 2048), repeat: int = 3, seed: int = 0) -> dict:
    """Encode/decode M weights per CPU-second of hyper and rtn (one thread, in memory; the best of ``repeat``
    runs, timed in CPU seconds of the calling thread, so a loaded machine slows the figures less than wall time)
    beside a plain numpy per-channel round-to-nearest of the same tensor (quantise: min, max, scale, round;
    dequantise: lo + q * step) timed the same way in the same run."""
    from .abc import TensorSpec
    from .registry import get_codec

    w = (np.random.default_rng(seed).standard_t(5, shape) * 0.02).astype(np.float32)
    spec = TensorSpec("w", "F32", shape)
    n = w.size

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            t = time.thread_time()
            fn()
            times.append(time.thread_time() - t)
        return min(times)

    def numpy_rtn_encode():
        lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
        step = (hi - lo) / 15
        return np.rint((w - lo) / step).astype(np.uint8), lo, step

    q, lo, step = numpy_rtn_encode()
    rows = {"numpy rtn-4 (baseline)": (best(numpy_rtn_encode), best(lambda: lo + q * step))}
    for label, config in SPEED_CONFIGS:
        codec = get_codec(config)
        data = memoryview(w.tobytes())
        chunks = list(codec.encode_tensor(spec, data, None))
        out = memoryview(bytearray(spec.nbytes))
        rows[label] = (best(lambda: list(codec.encode_tensor(spec, data, None))),
                       best(lambda: codec.decode_tensor(spec, chunks, None, out)))
    base_enc, base_dec = rows["numpy rtn-4 (baseline)"]
    return {"weights": n, "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "rows": [{"codec": k, "encode_mweights_s": n / e / 1e6, "decode_mweights_s": n / d / 1e6,
                      "encode_vs_numpy": base_enc / e, "decode_vs_numpy": base_dec / d} for k, (e, d) in rows.items()]}


def bench_pair(base: Path, ft: Path, evaluate, *, codec_configs, work: Path, log) -> dict:
    """Compress, restore and score every config; ``evaluate(model_dir) -> metrics``."""
    from .pipeline import compress_model, decompress_model

    weights = _count_weights(ft)
    log("scoring the original fine-tune")
    original = evaluate(ft)
    log("original " + json.dumps(original))
    rows = []
    for label, config in codec_configs:
        log(f"{label}: {config}")
        artifact = work / f"{label}.dvz"
        restored = work / f"{label}-restored"
        needs_base = config.get("on_delta", False)
        t = time.perf_counter()
        summary = compress_model(ft, artifact, codec=config, base_dir=base if needs_base else None, threads=2)
        encode_s = time.perf_counter() - t
        t = time.perf_counter()
        decompress_model(artifact, restored, base_dir=base if needs_base else None, threads=2)
        decode_s = time.perf_counter() - t
        quality = evaluate(restored)
        report = summary.codec_report
        rows.append({"label": label, "config": config, "bits_per_weight": 8 * summary.compressed_bytes / weights,
                     "ratio": summary.ratio, "compressed_bytes": summary.compressed_bytes,
                     "relative_weight_error": report.get("relative_weight_error"),
                     "raw_fallback": [r["name"] for r in report.get("raw_fallback", [])],
                     "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2), "quality": quality})
        log("row " + json.dumps(rows[-1]))  # each row as it comes: a long run cut short keeps what it measured
        artifact.unlink()
        shutil.rmtree(restored, ignore_errors=True)
    return {"weights": weights, "original": original, "rows": rows}


def format_report(report: dict) -> str:
    lines = [f"# modelcodecs bench lossy ({report['date']}, {report['machine']})", "",
             f"command: `{report['command']}`; load average {report['load']}", ""]
    for case in report["cases"]:
        metrics = [k for k in case["original"] if isinstance(case["original"][k], float)]
        lines += [f"## {case['name']}", "", f"{case['weights']:,} weights; original: "
                  + ", ".join(f"{k} {case['original'][k]:.4f}" for k in metrics), "",
                  "| config | bits/weight | ratio | rel. error | " + " | ".join(metrics)
                  + " | encode s | decode s | raw fallback |",
                  "|---|---|---|---|" + "---|" * len(metrics) + "---|---|---|"]
        for row in case["rows"]:
            q = row["quality"]
            cells = [f"{case['original'][k]:.4f} -> {q[k]:.4f} ({q[k] - case['original'][k]:+.4f})" for k in metrics]
            lines.append(f"| {row['label']} | {row['bits_per_weight']:.3f} | {row['ratio']:.2f} | "
                         f"{row['relative_weight_error']:.3g} | " + " | ".join(cells)
                         + f" | {row['encode_s']} | {row['decode_s']} | {len(row['raw_fallback'])} |")
        lines.append("")
    if report.get("speed"):
        s = report["speed"]
        lines += [f"## Speed (one thread, one {s['weights']:,}-weight fp32 tensor in memory, load average "
                  f"{s['load']})", "",
                  "| codec | encode M weights per CPU-s | decode M weights per CPU-s | encode vs numpy | "
                  "decode vs numpy |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['codec']} | {r['encode_mweights_s']:.1f} | {r['decode_mweights_s']:.1f} | "
                  f"{r['encode_vs_numpy']:.2f}x | {r['decode_vs_numpy']:.2f}x |" for r in s["rows"]]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelcodecs bench lossy", description=__doc__.split("\n\n")[0])
    p.add_argument("--classifier", nargs=3, metavar=("BASE", "FT", "DATA"),
                   help="a sequence-classification pair and its labelled held-out file instead of SmolLM2")
    p.add_argument("--bits", default="3,4,5,6,8", help="bits per weight to measure (of 3,4,5,6,8)")
    p.add_argument("--no-delta", action="store_true", help="weights mode only")
    p.add_argument("--only", default=None, help="comma-separated substrings: keep configs whose label contains one "
                   "(e.g. 'weights,paper')")
    p.add_argument("--steps", type=int, default=20, help="AdamW steps of the SmolLM2 fine-tune")
    p.add_argument("--max-tokens", type=int, default=8192, help="held-out tokens for perplexity")
    p.add_argument("--max-examples", type=int, default=1000, help="held-out examples for accuracy")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--speed-only", action="store_true", help="only the speed table (no pair, no fine-tune)")
    p.add_argument("--workdir", default=None, help="keeps the SmolLM2 folders between runs (default: temporary)")
    p.add_argument("--json", default=None, metavar="PATH")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> dict:
    from . import evaluate, packaged

    bits = tuple(int(b) for b in args.bits.split(",") if b.strip())
    if not bits or any(b not in HYPER_AT_BITS for b in bits):
        raise ConfigError(f"--bits takes some of {sorted(HYPER_AT_BITS)}")

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    chosen = configs(bits, not args.no_delta)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        chosen = [(label, config) for label, config in chosen if any(w in label for w in wanted)]
    if not chosen:
        raise ConfigError("no config left to benchmark (see --bits, --no-delta, --only)")
    if args.speed_only:
        if args.no_speed:
            raise ConfigError("--speed-only and --no-speed leave nothing to measure")
        return _report(args, [], speed())
    root = Path(args.workdir or tempfile.mkdtemp(prefix="modelcodecs-lossy-"))
    root.mkdir(parents=True, exist_ok=True)
    work = root / "work"
    work.mkdir(exist_ok=True)
    cases = []
    if args.classifier:
        base, ft, data = (Path(p) for p in args.classifier)
        cases.append({"name": f"classifier {ft.name} on {data.name}", **bench_pair(
            base, ft, lambda d: _scores(evaluate.evaluate_classification(d, data, max_examples=args.max_examples)),
            codec_configs=chosen, work=work, log=log)})
    else:
        log("writing SmolLM2-135M-Instruct and the Python docs corpus")
        base = packaged.smollm2_folder(root / "smollm2")
        train, heldout = packaged.python_docs_corpus(root / "docs")
        log(f"fine-tuning SmolLM2 for {args.steps} AdamW steps on the docs' training half")
        ft = finetune_causal_lm(base, train, root / f"smollm2-docs-{args.steps}", steps=args.steps)
        cases.append({"name": f"SmolLM2-135M-Instruct fp32 fine-tuned {args.steps} AdamW steps on Python docs "
                      f"(perplexity on the held-out topics, {args.max_tokens} tokens)", **bench_pair(
                          base, ft, lambda d: _scores(evaluate.evaluate_perplexity(d, heldout,
                                                                                   max_tokens=args.max_tokens)),
                          codec_configs=chosen, work=work, log=log)})
    return _report(args, cases, None if args.no_speed else speed())


def _report(args: argparse.Namespace, cases: list[dict], speed_figures: dict | None) -> dict:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{os.cpu_count()} CPUs", "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
            "command": "modelcodecs bench lossy " + " ".join(args.argv), "cases": cases, "speed": speed_figures}


def _scores(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if k in ("perplexity", "top1_accuracy", "accuracy", "macro_f1")}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = argv
    report = run(args)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


__all__ = ["configs", "finetune_causal_lm", "format_report", "main", "run", "speed"]
