"""Instruction counts (valgrind callgrind) of one encode + decode of a 1024 x 512 fp32 tensor by ``rtn`` (4 bits)
and ``hyper`` (n = 255, M = 3, auto_l), in this checkout and in an earlier version of ``codecs/`` (default: the
numpy-only version before the native kernels), beside the plain numpy per-channel round-to-nearest of
``modelcodecs bench lossy``'s speed table. Counts do not depend on the machine's load, unlike seconds.

    .venv/bin/python bench/lossy_callgrind.py [--ref 1656f21]

Each figure is (instructions of a run that encodes and decodes 1 + REPS times) - (instructions of the same run
that does it once), divided by REPS x the weights: Python start-up, imports and first-call costs cancel out (hash
seed fixed). Needs valgrind; about ten minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHAPE = (1024, 512)
CONFIGS = {"rtn-4": {"id": "rtn", "bits": 4}, "hyper-5": {"id": "hyper", "n": 255, "M": 3, "auto_l": True},
           "numpy": None}
# the commit before the native kernels (hyper and rtn in numpy)
NUMPY_ONLY = "1656f21"
REPS = 5


def child(source: str, label: str, reps: int) -> None:
    """Encode and decode ``reps`` times with the ``modelcodecs`` found under ``source`` ("" = installed)."""
    if source:
        sys.path.insert(0, source)
    import numpy as np

    import modelcodecs
    from modelcodecs.abc import TensorSpec
    from modelcodecs.registry import get_codec

    assert modelcodecs.__file__.startswith(source or str(REPO)), modelcodecs.__file__
    w = (np.random.default_rng(0).standard_t(5, SHAPE) * 0.02).astype(np.float32)
    spec = TensorSpec("w", "F32", SHAPE)
    data = memoryview(w.tobytes())
    codec = get_codec(CONFIGS[label]) if CONFIGS[label] else None
    out = memoryview(bytearray(spec.nbytes))
    for _ in range(reps):
        if codec is None:  # as bench_lossy.speed's baseline
            lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
            step = (hi - lo) / 15
            q = np.rint((w - lo) / step).astype(np.uint8)
            lo + q * step
        else:
            codec.decode_tensor(spec, list(codec.encode_tensor(spec, data, None)), None, out)


def instructions(source: str, label: str, reps: int) -> int:
    run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                          __file__, "--child", source, label, str(reps)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"})
    line = next(x for x in run.stderr.splitlines() if "Collected" in x)
    return int(line.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default=NUMPY_ONLY, help="git revision of the earlier codecs/ (default: numpy only)")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    weights = SHAPE[0] * SHAPE[1]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.ref, "codecs"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        (old / "codecs").rename(old / "modelcodecs")
        for built in (REPO / "codecs").glob("_fmdelta*.so"):  # the lossless core, unchanged, used as built here
            (old / "modelcodecs" / built.name).write_bytes(built.read_bytes())
        rows = []
        for source, version in (("", "this checkout"), (str(old), f"codecs/ at {args.ref}")):
            for label in ("numpy", "rtn-4", "hyper-5"):
                if label == "numpy" and source:
                    continue
                extra = instructions(source, label, 1 + REPS) - instructions(source, label, 1)
                rows.append((version, label, extra / (REPS * weights)))
    print(f"| version | case ({SHAPE[0]} x {SHAPE[1]} fp32, encode + decode) | instructions per weight |")
    print("|---|---|---|")
    for version, label, per_weight in rows:
        print(f"| {version} | {'plain numpy rtn-4 (baseline)' if label == 'numpy' else label} | {per_weight:.1f} |")


if __name__ == "__main__":
    main()
