"""Cost of LM-GC's built-in prior alone: encode, then decode, every float tensor of a gradient set, one thread, in
this process; prints CPU seconds (this thread), MB per CPU-second, the payload size and a digest of the payloads
and their meta (two code versions that agree on it write the same bytes).

``--phase load`` reads the tensors and stops: under ``valgrind --tool=callgrind``, its instruction count is the
interpreter, imports and reading, to subtract from a ``--phase both`` run of the same set.

    python bench/lmgc_builtin_cost.py DIR [--files N] [--phase load|encode|both] [--json PATH]
    valgrind --tool=callgrind --callgrind-out-file=cg.%p python bench/lmgc_builtin_cost.py DIR --files 4

To compare with an earlier version of the prior, run the same command with that version's ``codecs/`` first on
``PYTHONPATH`` as ``modelcodecs`` (e.g. ``cp -r codecs /tmp/old/modelcodecs`` and
``git show OLD:codecs/lmgc/priors.py > /tmp/old/modelcodecs/lmgc/priors.py``, then ``PYTHONPATH=/tmp/old``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

from modelcodecs import get_codec
from modelcodecs.abc import FLOAT_DTYPES, TensorSpec
from modelcodecs.hfio import ModelFolder
from modelcodecs.lmgc import priors


def read_tensors(folder: Path, files: int | None) -> list[tuple[TensorSpec, bytes]]:
    with ModelFolder(folder, unique_names=False) as grads:
        refs = [r for r in grads.iter_tensors() if r.spec.dtype in FLOAT_DTYPES]
        kept = sorted({r.file for r in refs})[:files]
        return [(TensorSpec(f"{r.file}/{r.spec.name}", r.spec.dtype, r.spec.shape), bytes(grads.read_tensor(r)))
                for r in refs if r.file in kept]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="gradient set folder")
    parser.add_argument("--files", type=int, help="only the first N files of the set")
    parser.add_argument("--phase", choices=("load", "encode", "both"), default="both")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    tensors = read_tensors(args.folder, args.files)
    raw = sum(len(data) for _, data in tensors)
    report = {"set": args.folder.name, "files": args.files, "raw_bytes": raw, "prior_module": priors.__file__,
              "load_average": os.getloadavg()[0]}
    if args.phase != "load":
        codec = get_codec({"id": "lmgc"})
        started = time.thread_time()
        encoded = [(spec, list(codec.encode_tensor(spec, memoryview(data), None))) for spec, data in tensors]
        report["encode_cpu_s"] = round(time.thread_time() - started, 3)
        digest = hashlib.sha256()
        for _, chunks in encoded:
            for chunk in chunks:
                digest.update(chunk.payload + json.dumps(chunk.meta, sort_keys=True).encode())
        report["payload_bytes"] = sum(len(c.payload) for _, chunks in encoded for c in chunks)
        report["digest"] = digest.hexdigest()[:16]
        report["encode_mb_per_cpu_s"] = round(raw / 1e6 / report["encode_cpu_s"], 2)
        if args.phase == "both":
            started = time.thread_time()
            for (spec, chunks), (_, data) in zip(encoded, tensors):
                out = bytearray(spec.nbytes)
                codec.decode_tensor(spec, chunks, None, memoryview(out))
                if out != data:
                    raise SystemExit(f"{spec.name}: decoded bytes differ")
            report["decode_cpu_s"] = round(time.thread_time() - started, 3)
            report["decode_mb_per_cpu_s"] = round(raw / 1e6 / report["decode_cpu_s"], 2)
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
