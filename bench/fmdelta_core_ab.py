"""The FM-Delta core alone, two builds side by side: encode or decode the largest float tensors of a safetensors
file in 4 Mi-element chunks (as the codec does), in this process, and print CPU seconds (``resource.getrusage``)
and MB per CPU-second. Every decode is checked against the original bytes.

A build is a ``_fmdelta*.so`` file (copy ``codecs/_fmdelta*.so`` aside before rebuilding); run the builds
alternately, several times, and compare on the same machine load:

    python bench/fmdelta_core_ab.py OLD.so decode W/smollm2-f32/model.safetensors F32 --tensors 6
    python bench/fmdelta_core_ab.py NEW.so decode W/smollm2-f32/model.safetensors F32 --tensors 6

``decode-base``: a fine-tune made by flipping the lowest mantissa bit of a third of the values, coded against the
original (the with-base mode). ``W/smollm2-f32``: ``modelcodecs.packaged.smollm2_folder(W / "smollm2-f32",
dtype="F32")`` (what ``modelcodecs bench --nobase --workdir W`` leaves there).
"""

from __future__ import annotations

import argparse
import importlib.util
import resource

import numpy as np
from safetensors.numpy import load_file

CHUNK_ELEMENTS = 1 << 22
_UINT = {"F32": np.uint32, "F16": np.uint16}


def load_core(path: str):
    spec = importlib.util.spec_from_file_location("modelcodecs._fmdelta", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("core", help="a built _fmdelta extension (.so)")
    p.add_argument("mode", choices=("encode", "decode", "decode-base"))
    p.add_argument("safetensors")
    p.add_argument("dtype", choices=sorted(_UINT))
    p.add_argument("--tensors", type=int, default=6, help="the N largest tensors (default 6)")
    args = p.parse_args()

    core = load_core(args.core)
    tensors = load_file(args.safetensors)
    largest = sorted(tensors, key=lambda k: -tensors[k].nbytes)[:args.tensors]
    chunks = []
    for name in largest:
        values = tensors[name].reshape(-1).view(_UINT[args.dtype])
        chunks += [np.ascontiguousarray(values[i:i + CHUNK_ELEMENTS]) for i in range(0, values.size, CHUNK_ELEMENTS)]
    bases = [None] * len(chunks)
    if args.mode == "decode-base":
        rng = np.random.default_rng(0)
        bases = chunks
        chunks = [c ^ (rng.random(c.size) < 0.33).astype(c.dtype) for c in chunks]
    chunks = [c.view(np.uint8) for c in chunks]
    bases = [b if b is None else b.view(np.uint8) for b in bases]

    payload_bytes = 0
    if args.mode == "encode":
        start = cpu_seconds()
        for chunk in chunks:
            payload_bytes += len(core.encode(chunk, None, args.dtype))
        spent = cpu_seconds() - start
    else:
        payloads = [np.frombuffer(bytes(core.encode(c, b, args.dtype)), np.uint8) for c, b in zip(chunks, bases)]
        outs = [np.empty_like(c) for c in chunks]
        start = cpu_seconds()
        for payload, base, out in zip(payloads, bases, outs):
            core.decode(payload, base, out, args.dtype)
        spent = cpu_seconds() - start
        for chunk, out in zip(chunks, outs):
            if not np.array_equal(chunk, out):
                raise SystemExit("decoded bytes differ from the original")
        payload_bytes = sum(p.size for p in payloads)
    mb = sum(c.size for c in chunks) / 1e6
    print(f"{args.core}: {args.mode} {args.dtype} {mb:.0f} MB in {spent:.2f} CPU-s = {mb / spent:.0f} MB per CPU-s "
          f"(payloads {payload_bytes:,} bytes)")


if __name__ == "__main__":
    main()
