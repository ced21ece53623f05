"""Encode/decode loop for leak hunting in the FM-Delta native coder: RSS should level off after warm-up.

    python bench/leak_fmdelta.py [--iterations 200] [--elements 1048576] [--threads 2]

Covers the native coder (fmdelta chunks), the planes fallback (no base), error paths (corrupt payloads) and the
thread pool. Prints the resident set size every few iterations and the growth after the first tenth.
"""

from __future__ import annotations

import argparse
import resource
import sys

import numpy as np


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # not Linux: peak RSS is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--elements", type=int, default=1 << 20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from modelcodecs import _fmdelta
    from modelcodecs.abc import EncodedChunk, TensorSpec
    from modelcodecs.errors import CorruptArtifactError
    from modelcodecs.fmdelta import FMDeltaCodec

    rng = np.random.default_rng(0)
    n = args.elements
    base = (rng.standard_t(6, n) * 0.02).astype(np.float32)
    ft = base + rng.normal(0, 1e-4, n).astype(np.float32)
    data, bdata = ft.tobytes(), base.tobytes()
    codec = FMDeltaCodec(chunk_elements=max(4096, n // 8))
    spec = TensorSpec("w", "F32", (n,))
    out = bytearray(len(data))
    start = None
    for it in range(args.iterations):
        for b in (bdata, None):
            chunks = list(codec.encode_tensor(spec, memoryview(data), None if b is None else memoryview(b),
                                              threads=args.threads))
            codec.decode_tensor(spec, chunks, None if b is None else memoryview(b), memoryview(out),
                                threads=args.threads)
            if bytes(out) != data:
                print("round trip mismatch", file=sys.stderr)
                return 1
        bad = EncodedChunk(chunks[0].coder, chunks[0].payload[: len(chunks[0].payload) // 2], chunks[0].meta)
        try:
            codec.decode_tensor(spec, [bad, *chunks[1:]], memoryview(bdata), memoryview(out))
        except CorruptArtifactError:
            pass
        _fmdelta.reference_stats_of(data, bdata, "F32")
        if it == max(1, args.iterations // 10):
            start = rss_mb()
        if it % 10 == 0 or it == args.iterations - 1:
            print(f"iteration {it:5d}  rss {rss_mb():8.1f} MiB", flush=True)
    if start is not None:
        print(f"growth after warm-up: {rss_mb() - start:+.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
