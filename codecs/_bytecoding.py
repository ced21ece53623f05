"""Byte-level coders shared by the codecs: zstd with per-thread contexts, and byte planes (optionally XORed
with the base) + zstd. Every decoder checks sizes before trusting a payload."""

from __future__ import annotations

import threading

import zstandard

from .errors import CorruptArtifactError

_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # zstandard contexts are not thread-safe: one per thread and level
    cache = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


# zstd at high levels codes ~1-3 MB/s: a cancel check between pieces of this size keeps a cancel prompt.
CANCEL_PIECE = 256 << 10


def zstd_compress(data, level: int, cancel=None) -> bytes:
    """One zstd frame (holding its content size). With ``cancel`` (a callable that raises to stop), the data is
    fed in pieces of ``CANCEL_PIECE`` bytes and ``cancel()`` runs between them."""
    if cancel is None or len(memoryview(data).cast("B")) <= CANCEL_PIECE:
        return _compressor(level).compress(data)
    view = memoryview(data).cast("B")
    stream = _compressor(level).compressobj(size=len(view))
    parts = []
    for start in range(0, len(view), CANCEL_PIECE):
        cancel()
        parts.append(stream.compress(view[start:start + CANCEL_PIECE]))
    parts.append(stream.flush())
    return b"".join(parts)


# A zstd block holds at most 128 KB and costs at least 4 bytes, so no frame expands by 2^15 or more; a frame that
# claims twice that is crafted, and is refused before its claimed size is allocated.
ZSTD_MAX_EXPANSION = 1 << 16


def zstd_decompress(payload: bytes, nbytes: int, what: str) -> bytes:
    """Decompress a zstd frame that must hold exactly ``nbytes`` bytes."""
    if nbytes > ZSTD_MAX_EXPANSION * len(payload):
        raise CorruptArtifactError(f"{what}: a zstd frame of {len(payload):,} bytes cannot hold {nbytes:,} bytes")
    try:
        declared = zstandard.get_frame_parameters(payload).content_size
        if declared != nbytes:
            raise CorruptArtifactError(f"{what}: zstd frame holds {declared} bytes, expected {nbytes}")
        raw = _decompressor().decompress(payload, max_output_size=nbytes)
    except zstandard.ZstdError as exc:
        raise CorruptArtifactError(f"{what}: zstd frame does not decompress: {exc}") from None
    if len(raw) != nbytes:
        raise CorruptArtifactError(f"{what}: decompressed to {len(raw)} bytes, expected {nbytes}")
    return raw


def planes_encode(data: memoryview, base: memoryview | None, item: int, level: int, cancel=None) -> bytes:
    """XOR with the base (when given), split bytes into ``item`` planes, zstd (``cancel`` as in zstd_compress)."""
    import numpy as np  # imported when first needed: the command line starts faster without it

    arr = np.frombuffer(data, dtype=np.uint8)
    if base is not None:
        arr = np.bitwise_xor(arr, np.frombuffer(base, dtype=np.uint8))
    if item > 1:
        arr = np.ascontiguousarray(arr.reshape(-1, item).T)
    return zstd_compress(arr, level, cancel)


def planes_decode(payload: bytes, base: memoryview | None, out: memoryview, item: int, what: str) -> None:
    import numpy as np

    raw = np.frombuffer(zstd_decompress(payload, out.nbytes, what), dtype=np.uint8)
    dst = np.frombuffer(out, dtype=np.uint8)
    if item > 1:
        raw = raw.reshape(item, -1).T
        dst = dst.reshape(-1, item)
    if base is not None:
        np.bitwise_xor(raw, np.frombuffer(base, dtype=np.uint8).reshape(dst.shape), out=dst)
    else:
        dst[...] = raw
