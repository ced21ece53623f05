"""``modelcodecs bench --gradients DIR``: LM-GC beside classical coders on the same gradient bytes.

For every float tensor of the gradient set (each step's file), on the same bytes in the same run, single-threaded
(MB/s are per core): ``lmgc`` with the built-in prior, gzip -9, lzma -9, bz2 -9, zstd -19, byte planes + zstd -19,
FM-Delta's no-base float coder and fpzip (lossless mode; when the ``fpzip`` package is installed). Each coder's
output is decoded and compared byte for byte. Reported: rate (compressed / raw bytes), bits per float, encode and
decode MB/s, and for lmgc the ideal code length (the sum of -log2 p over the coded symbols) beside the real payload.

With ``--prior DIR`` (a local causal LM folder), LM-GC with that prior is measured on a short slice of the set
(``--lm-floats``, the first floats of the first tensor; a CPU codes tens to hundreds of tokens per second), with
and without renormalisation over legal tokens, beside the built-in prior and the classical coders on the same
slice, with tokens per second both ways.

``--memory`` compresses and decompresses the whole set in a fresh process and reports its peak RSS (VmHWM), wall
and CPU seconds (all threads) and the load average around the call; ``--threads 1 2`` does so on each thread count.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .._bytecoding import planes_decode, planes_encode, zstd_compress, zstd_decompress
from ..abc import DTYPE_SIZES, FLOAT_DTYPES, TensorSpec
from ..hfio import ModelFolder
from ..registry import get_codec

MB = 1e6


def _fpzip():
    try:
        import fpzip
    except ImportError:
        return None
    return fpzip


def _classical() -> dict:
    """name -> (encode(bytes, spec) -> bytes, decode(payload, spec) -> bytes)."""
    coders = {
        "gzip-9": (lambda d, s: gzip.compress(d, 9, mtime=0), lambda p, s: gzip.decompress(p)),
        "lzma-9": (lambda d, s: lzma.compress(d, preset=9), lambda p, s: lzma.decompress(p)),
        "bz2-9": (lambda d, s: bz2.compress(d, 9), lambda p, s: bz2.decompress(p)),
        "zstd-19": (lambda d, s: zstd_compress(d, 19), lambda p, s: zstd_decompress(p, s.nbytes, s.name)),
        "planes+zstd-19": (lambda d, s: planes_encode(memoryview(d), None, DTYPE_SIZES[s.dtype], 19),
                           _planes_decode),
    }
    fmdelta = get_codec("fmdelta")
    coders["fmdelta (no base)"] = (lambda d, s: _codec_encode(fmdelta, d, s), lambda p, s: _codec_decode(fmdelta, p, s))
    fpzip = _fpzip()
    if fpzip is not None:
        def fp_encode(d, s):
            return fpzip.compress(np.frombuffer(d, _np_dtype(s.dtype)).reshape(1, 1, 1, -1).copy(), precision=0)

        def fp_decode(p, s):
            return np.ascontiguousarray(fpzip.decompress(p)).tobytes()

        coders["fpzip"] = (fp_encode, fp_decode)
    return coders


def _np_dtype(dtype: str):
    return {"F32": np.float32, "F64": np.float64}.get(dtype)


def _planes_decode(payload: bytes, spec: TensorSpec) -> bytes:
    out = bytearray(spec.nbytes)
    planes_decode(payload, None, memoryview(out), DTYPE_SIZES[spec.dtype], spec.name)
    return bytes(out)


def _codec_encode(codec, data: bytes, spec: TensorSpec):
    return list(codec.encode_tensor(spec, memoryview(data), None, threads=1))


def _codec_decode(codec, chunks, spec: TensorSpec) -> bytes:
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, None, memoryview(out), threads=1)
    return bytes(out)


def _size(payload) -> int:
    return sum(len(c.payload) for c in payload) if isinstance(payload, list) else len(payload)


def _tensors(folder: Path, limit_floats: int | None = None):
    """(spec, bytes) of every float tensor, in file order; with ``limit_floats``, the first floats of the largest
    float tensor of the first file."""
    with ModelFolder(folder, unique_names=False) as grads:
        refs = [r for r in grads.iter_tensors() if r.spec.dtype in FLOAT_DTYPES]
        if limit_floats is not None:
            first = [r for r in refs if r.file == refs[0].file]
            ref = max(first, key=lambda r: r.spec.numel)
            n = min(limit_floats, ref.spec.numel)
            data = bytes(grads.read_tensor(ref))[:n * DTYPE_SIZES[ref.spec.dtype]]
            yield TensorSpec(f"{ref.file}/{ref.spec.name}[:{n}]", ref.spec.dtype, (n,)), data
            return
        for ref in refs:
            yield TensorSpec(f"{ref.file}/{ref.spec.name}", ref.spec.dtype, ref.spec.shape), \
                bytes(grads.read_tensor(ref))


def measure(folder: Path, coders: dict, limit_floats: int | None = None) -> dict:
    """Every coder on every float tensor of ``folder``: totals per coder."""
    rows = {name: {"raw": 0, "compressed": 0, "floats": 0, "enc_s": 0.0, "dec_s": 0.0, "enc_cpu": 0.0,
                   "dec_cpu": 0.0, "ideal_bits": 0.0,
                   "tokens": 0, "exact": True} for name in coders}
    for spec, data in _tensors(folder, limit_floats):
        for name, (encode, decode) in coders.items():
            started, cpu0 = time.perf_counter(), time.thread_time()
            payload = encode(data, spec)
            middle, cpu1 = time.perf_counter(), time.thread_time()
            restored = decode(payload, spec)
            ended, cpu2 = time.perf_counter(), time.thread_time()
            row = rows[name]
            row["enc_cpu"] += cpu1 - cpu0
            row["dec_cpu"] += cpu2 - cpu1
            row["raw"] += len(data)
            row["floats"] += spec.numel
            row["compressed"] += _size(payload)
            row["enc_s"] += middle - started
            row["dec_s"] += ended - middle
            row["exact"] &= bytes(restored) == data
            if isinstance(payload, list):
                row["ideal_bits"] += sum(c.meta.get("ideal_bits", 0.0) for c in payload)
                row["tokens"] += sum(c.meta.get("tokens", 0) for c in payload)
    for row in rows.values():
        row["rate"] = round(row["compressed"] / row["raw"], 4) if row["raw"] else 0.0
        row["bits_per_float"] = round(8 * row["compressed"] / row["floats"], 3) if row["floats"] else 0.0
        row["enc_mb_s"] = round(row["raw"] / MB / row["enc_s"], 2) if row["enc_s"] else 0.0
        row["dec_mb_s"] = round(row["raw"] / MB / row["dec_s"], 2) if row["dec_s"] else 0.0
        # per core: MB per CPU-second of the coding thread (the machine is shared; wall time is not ours alone)
        row["enc_mb_cpu_s"] = round(row["raw"] / MB / row["enc_cpu"], 2) if row["enc_cpu"] else 0.0
        row["dec_mb_cpu_s"] = round(row["raw"] / MB / row["dec_cpu"], 2) if row["dec_cpu"] else 0.0
        if row["ideal_bits"]:
            row["ideal_vs_real"] = round(row["ideal_bits"] / 8 / row["compressed"], 5)
        if row["tokens"]:
            row["enc_tokens_s"] = round(row["tokens"] / row["enc_s"], 1)
            row["dec_tokens_s"] = round(row["tokens"] / row["dec_s"], 1)
    return rows


def _lmgc(config: dict):
    codec = get_codec(config)
    prior = codec.load_prior()  # loading the model and finding the legal tokens are not timed
    if hasattr(prior, "legal_mask"):
        prior.legal_mask(codec._serialisation)
    return (lambda d, s: _codec_encode(codec, d, s), lambda p, s: _codec_decode(codec, p, s))


WHOLE_SET_SCRIPT = """
import json, os, resource, sys, modelcodecs, shutil
from pathlib import Path
from modelcodecs.memory import peak_rss
folder, out, step, threads = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
load, before = os.getloadavg()[0], cpu()
if step == "compress":
    s = modelcodecs.compress_model(folder, out / "g.dvz", codec="lmgc", threads=threads).as_dict()
else:
    s = modelcodecs.decompress_model(out / "g.dvz", out / "restored", threads=threads).as_dict()
    shutil.rmtree(out / "restored")
print(json.dumps({**s, "vmhwm": peak_rss(), "cpu_seconds": cpu() - before, "load": [load, os.getloadavg()[0]]}))
"""


def whole_set(folder: Path, work: Path, threads: list[int]) -> dict:
    """Compress and decompress ``folder`` with lmgc (built-in prior) on each thread count, each step in a fresh
    process: its peak RSS (VmHWM), wall and CPU seconds (all threads) of the call, and the load average."""
    work.mkdir(parents=True, exist_ok=True)
    result = {"set_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file())}
    for count in threads:
        for step in ("compress", "decompress"):
            proc = subprocess.run([sys.executable, "-c", WHOLE_SET_SCRIPT, str(folder), str(work), step, str(count)],
                                  capture_output=True, text=True, check=True)
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            result.setdefault(f"threads_{count}", {})[step] = {
                "peak_rss_bytes": summary["vmhwm"], "seconds": round(summary["seconds"], 2),
                "cpu_seconds": round(summary["cpu_seconds"], 2), "mb_per_s": summary["mb_per_s"],
                "mb_per_cpu_s": round(result["set_bytes"] / MB / summary["cpu_seconds"], 2),
                "load_average": summary["load"], "ratio": summary.get("ratio")}
        (work / "g.dvz").unlink()
    return result


def format_rows(title: str, rows: dict) -> str:
    lines = [f"### {title}", "",
             "| coder | rate | bits/float | encode MB/s wall (per CPU-s) | decode MB/s wall (per CPU-s) | exact | "
             "ideal / real |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["rate"]):
        extra = f"{r['ideal_vs_real']:.5f}" if "ideal_vs_real" in r else ""
        if "enc_tokens_s" in r and "builtin" not in name:
            extra += f" ({r['enc_tokens_s']} / {r['dec_tokens_s']} tokens/s)"
        lines.append(f"| {name} | {r['rate']:.4f} | {r['bits_per_float']:.3f} | {r['enc_mb_s']} ({r['enc_mb_cpu_s']}) | "
                     f"{r['dec_mb_s']} ({r['dec_mb_cpu_s']}) | "
                     f"{'yes' if r['exact'] else 'NO'} | {extra} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelcodecs bench --gradients",
                                description="LM-GC beside classical coders on a gradient set")
    p.add_argument("--gradients", action="append", required=True, metavar="DIR", help="gradient set folder")
    p.add_argument("--prior", action="append", default=[], metavar="DIR", help="a causal LM folder as prior")
    p.add_argument("--lm-floats", type=int, default=256, help="floats coded with each LM prior (a short slice)")
    p.add_argument("--memory", action="store_true", help="whole-set compress/decompress: peak RSS, wall and CPU "
                   "seconds")
    p.add_argument("--memory-only", action="store_true", help="only the whole-set measurement (large sets)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], metavar="N",
                   help="thread counts of the whole-set measurement (default: 1)")
    p.add_argument("--lm-only", action="store_true", help="only the LM-prior slice (with --prior)")
    p.add_argument("--json", help="write the report as JSON to this file")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    report = {}
    for folder in map(Path, args.gradients):
        entry = {}
        if not args.memory_only and not args.lm_only:
            coders = {"lmgc (builtin prior)": _lmgc({"id": "lmgc"}), **_classical()}
            entry["all"] = measure(folder, coders)
            print(format_rows(f"{folder.name}: every float tensor", entry["all"]), flush=True)
        if args.prior:
            slice_coders = {"lmgc (builtin prior)": _lmgc({"id": "lmgc"}), **_classical()}
            for prior in args.prior:
                for renorm in (True, False):
                    label = f"lmgc ({Path(prior).name}{', renormalised' if renorm else ''})"
                    slice_coders[label] = _lmgc({"id": "lmgc", "prior": prior, "renormalise": renorm})
            entry["lm_slice"] = measure(folder, slice_coders, args.lm_floats)
            print(format_rows(f"{folder.name}: first {args.lm_floats} floats, LM priors", entry["lm_slice"]),
                  flush=True)
        if args.memory or args.memory_only:
            entry["memory"] = whole_set(folder, Path(f"{folder}.bench-work"), args.threads)
            print(json.dumps(entry["memory"], indent=1), flush=True)
        report[str(folder)] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
