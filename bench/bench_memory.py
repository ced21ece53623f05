"""Peak RSS of compress and of decompress on a synthetic pair of a given size, against the target
"2x the largest tensor + 300 MB"; with ``--limit-as``, each step runs with its address space limited (as
``prlimit --as``), e.g. to half the checkpoint's size.

Each step runs in a fresh child process and reports its own ``VmHWM`` (the kernel's high-water mark, so
nothing is missed between samples); a child that only imports modelcodecs gives the baseline.

    python bench/bench_memory.py [--size 2G] [--tensors 4] [--dtype F32] [--codec fmdelta] [--threads N]
                                 [--limit-as half|BYTES] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from modelcodecs import synthetic
from modelcodecs.bench import machine

ITEM = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}

CHILD = r"""
import json, resource, sys, time
import modelcodecs
step, args = sys.argv[1], json.loads(sys.argv[2])
started = time.perf_counter()
if step == "compress":
    s = modelcodecs.compress_model(args["ft"], args["artifact"], codec=args["codec"], base_dir=args["base"],
                                   threads=args["threads"]).as_dict()
    extra = {"ratio": s["ratio"], "compressed_bytes": s["compressed_bytes"]}
elif step == "decompress":
    s = modelcodecs.decompress_model(args["artifact"], args["out"], base_dir=args["base"],
                                     threads=args["threads"]).as_dict()
    extra = {"verified": s["verified"], "bytes_written": s["bytes_written"]}
else:
    extra = {}
# VmHWM: this program's own high-water mark (ru_maxrss would include the parent's peak inherited through fork)
with open("/proc/self/status") as fh:
    hwm = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:")), None)
if hwm is None:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"step": step, "seconds": time.perf_counter() - started, "peak_rss_bytes": hwm, **extra}))
"""


def parse_size(text: str) -> int:
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30}
    text = text.strip().upper().rstrip("B")
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def child(step: str, args: dict, limit: int | None = None) -> dict:
    import os
    import resource

    def limited() -> None:  # what `prlimit --as=LIMIT` does, for this child only
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # with a limit on the address space, reservations count: one malloc arena instead of one per thread
    env = {**os.environ, "MALLOC_ARENA_MAX": "1"} if limit else None
    proc = subprocess.run([sys.executable, "-c", CHILD, step, json.dumps(args)], capture_output=True, text=True,
                          preexec_fn=limited if limit else None, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="2G", help="fine-tuned checkpoint size (default 2G = 2e9 bytes)")
    p.add_argument("--tensors", type=int, default=4, help="number of (equal) tensors (default 4)")
    p.add_argument("--dtype", default="F32", choices=sorted(ITEM))
    p.add_argument("--delta-sigma", type=float, default=1e-4)
    p.add_argument("--codec", default="fmdelta", help="codec id (default fmdelta)")
    p.add_argument("--threads", type=int, default=None, help="codec threads (default: all usable cores)")
    p.add_argument("--limit-as", default=None, help="limit each step's address space: 'half' (of the "
                   "checkpoint's size) or a size such as 1G")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)

    size = parse_size(args.size)
    n_elements = size // ITEM[args.dtype]
    owned = args.workdir is None
    root = Path(tempfile.mkdtemp(prefix="modelcodecs-mem-") if owned else args.workdir)
    try:
        started = time.perf_counter()
        pair = synthetic.make_synthetic_pair(root / "pair", dtype=args.dtype, n_elements=n_elements,
                                             delta_sigma=args.delta_sigma, n_tensors=args.tensors, seed=0)
        gen_s = time.perf_counter() - started
        largest = max(math.prod(shape) for shape in pair.info["shapes"]) * ITEM[args.dtype]
        target = 2 * largest + 300_000_000
        checkpoint = n_elements * ITEM[args.dtype]
        limit = None if args.limit_as is None else checkpoint // 2 if args.limit_as == "half" \
            else parse_size(args.limit_as)
        common = {"base": str(pair.base), "ft": str(pair.finetuned), "artifact": str(root / "a.dvz"),
                  "out": str(root / "restored"), "codec": args.codec, "threads": args.threads}
        results = [child("baseline", common, limit), child("compress", common, limit),
                   child("decompress", common, limit)]
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "command": "python bench/bench_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "checkpoint_bytes": n_elements * ITEM[args.dtype], "tensors": args.tensors, "dtype": args.dtype,
              "largest_tensor_bytes": largest, "target_bytes": target, "generate_seconds": gen_s,
              "address_space_limit_bytes": limit,
              "codec": args.codec, "steps": results}
    print(f"checkpoint {report['checkpoint_bytes'] / 1e6:.0f} MB in {args.tensors} {args.dtype} tensors "
          f"(largest {largest / 1e6:.0f} MB); target peak RSS = 2 x largest + 300 MB = {target / 1e6:.0f} MB"
          + (f"; address space limited to {limit / 1e6:.0f} MB" if limit else ""))
    for r in results:
        line = f"  {r['step']:<10} peak RSS {r['peak_rss_bytes'] / 1e6:8.0f} MB"
        if r["step"] != "baseline":
            line += f"  ({r['peak_rss_bytes'] / target:.2f} of target; {r['seconds']:.1f} s"
            line += f"; ratio {r['ratio']:.4f})" if "ratio" in r else f"; verified {r['verified']})"
            line += "  MET" if r["peak_rss_bytes"] <= target else "  MISSED"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
