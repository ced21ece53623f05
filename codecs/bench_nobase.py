"""``modelcodecs bench --nobase``: checkpoints coded without a base, whole commands side by side.

On the real SmolLM2-135M-Instruct (``modelcodecs.packaged.smollm2_folder``, bf16 and fp32) each tool runs as the
command a user would type, in its own process, at 1 thread, and the restored folder is compared with the original
file by file (sha256):

* ``fmdelta-nobase`` -- ``python -m modelcodecs compress FOLDER -o X.dvz --threads 1`` and ``decompress``;
* ``zstd-3``          -- the same commands with ``--codec zstd`` (the fine-tuned bytes alone, zstd level 3);
* ``lmz``             -- ``lmz compress -j 1`` and ``lmz decompress -j 1`` (the PyPI package ``lmzip``, a peer:
  installed only where the benchmark runs, never a dependency; ``--lmz PATH`` names its command).

Ratio = original folder bytes (every file) / archive bytes. MB/s = original folder MB / wall seconds of the whole
command (interpreter start, imports, reading, hashing and writing included); per CPU-s = / CPU seconds of the
child (user + system). Beside them, two bounds on the tensors' bytes (empirical entropies, no table costs):

* ``order-0``: per tensor, the order-0 entropy of the whole value after dropping mantissa low bits that are zero in
  every value (bf16 stored as fp32 becomes bf16), when that is at most 16 bits; else of the sign, exponent and top
  7 mantissa bits with the rest raw;
* ``context model``: the model fmdelta-nobase codes with, per 4 Mi-element chunk: H(exponent | previous exponent)
  + H(sign, top 7 mantissa bits | exponent) + H(next 8 bits | exponent) + H(next 8 | those 8) + the raw bits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from . import bench_cli
from .bench_cli import _folder_bytes
from .errors import ConfigError
from .hfio import ModelFolder

MB = 1e6
CHUNK = 1 << 22
_FIELDS = {"BF16": (np.uint16, 7), "F16": (np.uint16, 10), "F32": (np.uint32, 23)}


def _tree_digest(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            out[str(path.relative_to(folder))] = h.hexdigest()
    return out


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of a command (``bench_cli._timed``)."""
    cpu: list[float] = []
    wall = bench_cli._timed(cmd, 1, cpu=cpu)
    return wall, cpu[0]


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = counts.sum()
    return float((counts * np.log2(total / counts)).sum()) if total else 0.0


def _conditional(ctx: np.ndarray, sym: np.ndarray, nsym: int) -> float:
    joint = np.bincount(ctx.astype(np.int64) * nsym + sym, minlength=256 * nsym)
    return _entropy(joint) - _entropy(np.bincount(ctx, minlength=256))


def tensor_bounds(values: np.ndarray, dtype: str) -> tuple[float, float]:
    """(order-0 bound, context-model bound) in bytes for one float tensor's bit patterns (see the module doc)."""
    uint, mbits = _FIELDS[dtype]
    u = values.view(uint).astype(np.uint64)
    top = 8 * np.dtype(uint).itemsize - 1
    low = int(np.bitwise_or.reduce(u & ((1 << mbits) - 1))) if u.size else 0
    shift = (low & -low).bit_length() - 1 if low else mbits
    width = top + 1 - shift
    mw = mbits - shift
    k = min(7, mw)
    if width <= 16:
        order0 = _entropy(np.bincount((u >> shift).astype(np.int64), minlength=1 << width))
    else:
        head = (u >> (shift + mw - k)).astype(np.int64)
        order0 = _entropy(np.bincount(head)) + (mw - k) * u.size
    nlow = mw - k
    cbits = min(8, nlow)
    dbits = min(8, nlow - cbits)
    context = 0.0
    for start in range(0, u.size, CHUNK):
        c = u[start:start + CHUNK]
        e = ((c >> mbits) & ((1 << (top - mbits)) - 1)).astype(np.int64)
        prev = np.concatenate([[0], e[:-1]])
        m = (c & ((1 << mbits) - 1)) >> shift
        sb = (((c >> top) << k) | (m >> nlow)).astype(np.int64)
        context += _conditional(prev, e, 256) + _conditional(e, sb, 2 << k)
        if nlow:
            low = m & ((1 << nlow) - 1)
            cs = (low >> (nlow - cbits)).astype(np.int64)
            ds = ((low >> (nlow - cbits - dbits)) & ((1 << dbits) - 1)).astype(np.int64)
            context += _conditional(e, cs, 1 << cbits) + _conditional(cs, ds, 1 << dbits)
            context += (nlow - cbits - dbits) * c.size
    return order0 / 8, context / 8


def folder_bounds(folder: Path) -> dict:
    tensor_bytes = order0 = context = 0.0
    with ModelFolder(folder) as model:
        for ref in model.iter_tensors():
            data = np.frombuffer(model.read_tensor(ref), dtype=np.uint8)
            tensor_bytes += data.size
            if ref.spec.dtype in _FIELDS:
                a, b = tensor_bounds(data, ref.spec.dtype)
            else:
                a = b = float(data.size)
            order0 += a
            context += b
    return {"tensor_bytes": int(tensor_bytes), "order0_bytes": int(order0), "context_bytes": int(context)}


def _tools(lmz: str | None) -> list[tuple[str, list[str], list[str], str]]:
    """(label, compress argv with {src}/{dst}, decompress argv with {src}/{dst}, archive suffix)."""
    py = [sys.executable, "-m", "modelcodecs"]
    tools = [
        ("fmdelta-nobase", py + ["compress", "{src}", "-o", "{dst}", "--threads", "1", "-q"],
         py + ["decompress", "{src}", "-o", "{dst}", "--threads", "1", "-q"], ".dvz"),
        ("zstd-3", py + ["compress", "--codec", "zstd", "{src}", "-o", "{dst}", "--threads", "1", "-q"],
         py + ["decompress", "{src}", "-o", "{dst}", "--threads", "1", "-q"], ".dvz"),
    ]
    if lmz:
        tools.append(("lmz", [lmz, "compress", "-j", "1", "-q", "-f", "{src}", "{dst}"],
                      [lmz, "decompress", "-j", "1", "-q", "-f", "{src}", "{dst}"], ".lmz"))
    return tools


def run_case(name: str, folder: Path, work: Path, lmz: str | None, log) -> dict:
    original = _folder_bytes(folder)
    digest = _tree_digest(folder)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, comp, decomp, suffix in _tools(lmz):
        archive = work / f"{label}{suffix}"
        restored = work / f"{label}-restored"
        shutil.rmtree(restored, ignore_errors=True)
        archive.unlink(missing_ok=True)
        log(f"  {label}: compress")
        cw, cc = _timed([a.format(src=folder, dst=archive) for a in comp])
        log(f"  {label}: decompress")
        dw, dc = _timed([a.format(src=archive, dst=restored) for a in decomp])
        size = archive.stat().st_size
        same = _tree_digest(restored) == digest
        rows.append({"tool": label, "archive_bytes": size, "ratio": original / size, "fraction": size / original,
                     "compress_s": cw, "compress_cpu_s": cc, "decompress_s": dw, "decompress_cpu_s": dc,
                     "compress_mb_s": original / MB / cw, "decompress_mb_s": original / MB / dw,
                     "compress_mb_cpu_s": original / MB / max(cc, 1e-9),
                     "decompress_mb_cpu_s": original / MB / max(dc, 1e-9), "byte_identical": same})
        shutil.rmtree(restored, ignore_errors=True)
        archive.unlink(missing_ok=True)
    log("  bounds")
    return {"name": name, "folder_bytes": original, "rows": rows, "bounds": folder_bounds(folder)}


def format_case(case: dict) -> str:
    b = case["bounds"]
    other = case["folder_bytes"] - b["tensor_bytes"]
    lines = [f"### {case['name']}  (folder {case['folder_bytes'] / MB:.1f} MB, tensors {b['tensor_bytes'] / MB:.1f} MB)",
             "", "| tool | archive MB | archive / folder | compress MB/s (per CPU-s) | decompress MB/s (per CPU-s) "
             "| byte-identical |", "|---|---|---|---|---|---|"]
    for r in case["rows"]:
        lines.append(f"| {r['tool']} | {r['archive_bytes'] / MB:.2f} | {r['fraction']:.4f} | "
                     f"{r['compress_mb_s']:.1f} ({r['compress_mb_cpu_s']:.1f}) | {r['decompress_mb_s']:.1f} "
                     f"({r['decompress_mb_cpu_s']:.1f}) | {'yes' if r['byte_identical'] else 'NO'} |")
    lines += ["", f"Bounds on the tensors ({b['tensor_bytes'] / MB:.2f} MB; the other {other / MB:.2f} MB of files "
                  f"not counted): order-0 {b['order0_bytes'] / MB:.2f} MB "
                  f"({b['order0_bytes'] / b['tensor_bytes']:.4f}), context model {b['context_bytes'] / MB:.2f} MB "
                  f"({b['context_bytes'] / b['tensor_bytes']:.4f})."]
    return "\n".join(lines)


def main(args) -> int:
    """Entry from ``modelcodecs bench --nobase`` (args: workdir, lmz, dtypes, json, quiet)."""
    from .packaged import smollm2_folder

    lmz = args.lmz or shutil.which("lmz")
    dtypes = [d.strip().upper() for d in args.nobase_dtypes.split(",") if d.strip()]
    if not dtypes or any(d not in ("BF16", "F32") for d in dtypes):
        raise ConfigError("--nobase-dtypes takes BF16 and/or F32")
    if not args.workdir:
        raise ConfigError("--nobase needs --workdir (SmolLM2 folders are cached there)")
    root = Path(args.workdir)
    root.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    cases = []
    for dtype in dtypes:
        log(f"SmolLM2-135M {dtype}")
        folder = smollm2_folder(root / f"smollm2-{dtype.lower()}", dtype=dtype)
        work = root / f"work-{dtype.lower()}"
        work.mkdir(exist_ok=True)
        cases.append(run_case(f"SmolLM2-135M-Instruct {dtype}, no base, 1 thread", folder, work, lmz, log))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    report = {"lmz": lmz, "load_average_end": load, "cases": cases}
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print("\n\n".join(format_case(c) for c in cases))
        if not lmz:
            print("\n(lmz not found: install the PyPI package lmzip where the benchmark runs, or pass --lmz PATH)")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


__all__ = ["folder_bounds", "main", "run_case", "tensor_bounds"]
