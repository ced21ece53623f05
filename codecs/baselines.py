"""Baseline codecs, built in so every comparison runs side by side on the same bytes:

* ``zstd``: the fine-tuned bytes alone through zstd (what people do today);
* ``xor-zstd``: XOR with the base, bytes split into planes, zstd (ZipLLM/BitX-style delta coding).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence

from ._bytecoding import planes_decode, planes_encode, zstd_compress, zstd_decompress
from ._threads import iter_ordered, resolve_threads
from .abc import DTYPE_SIZES, CancelCheck, Codec, EncodedChunk, Param, TensorSpec, check_cancel
from .errors import CorruptArtifactError, UnsupportedDtypeError, WrongBaseError


class _ChunkedByteCodec(Codec):
    """Splits a tensor into fixed-size chunks coded independently (in parallel), storing raw when coding does
    not pay. Subclasses say how one chunk is coded."""

    lossless = True
    coder: str
    # our chunks' ``meta["n"]`` counts bytes (FM-Delta's counts elements); the pipeline's progress reads this
    meta_n_unit = "bytes"

    @abstractmethod
    def _encode_chunk(self, data: memoryview, base: memoryview | None, item: int,
                      cancel: Callable[[], None] | None = None) -> tuple[bytes, dict]:
        """Code one chunk; return the payload and its small meta. ``cancel()`` raises when the caller asked to
        stop: a slow coder calls it between pieces of the chunk."""

    @abstractmethod
    def _decode_chunk(self, payload: bytes, meta: dict, base: memoryview | None, out: memoryview, item: int,
                      what: str) -> None:
        """Decode one chunk's payload into ``out`` (exactly its size)."""

    def _bounds(self, spec: TensorSpec) -> list[tuple[int, int]]:
        item = DTYPE_SIZES[spec.dtype]
        step = max(item, self.chunk_bytes // item * item)
        return [(a, min(spec.nbytes, a + step)) for a in range(0, spec.nbytes, step)]

    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        if spec.dtype not in DTYPE_SIZES:
            raise UnsupportedDtypeError(f"{self.codec_id}: unsupported dtype {spec.dtype!r}")
        data = memoryview(data).cast("B")
        base = memoryview(base).cast("B") if base is not None else None
        item = DTYPE_SIZES[spec.dtype]

        def stop() -> None:
            check_cancel(cancel)

        def job(bound: tuple[int, int]) -> EncodedChunk:
            a, b = bound
            stop()  # a queued chunk whose turn comes after a cancel does not start
            args = (data[a:b], base[a:b] if base is not None else None, item)
            # Only a caller that can cancel passes the check on (subclasses may take the three arguments only).
            payload, meta = self._encode_chunk(*args, stop) if cancel is not None else self._encode_chunk(*args)
            if len(payload) >= b - a:
                return EncodedChunk("raw", bytes(data[a:b]), {"n": b - a})
            return EncodedChunk(self.coder, payload, {"n": b - a, **meta})

        yield from iter_ordered(job, self._bounds(spec), resolve_threads(threads), lambda: check_cancel(cancel))

    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        out = memoryview(out).cast("B")
        base = memoryview(base).cast("B") if base is not None else None
        item = DTYPE_SIZES[spec.dtype]
        jobs, offset = [], 0
        for i, chunk in enumerate(chunks):
            size = chunk.meta.get("n")
            if chunk.coder not in ("raw", self.coder) or not isinstance(size, int) or isinstance(size, bool) \
                    or size <= 0 or offset + size > spec.nbytes or size % item:
                raise CorruptArtifactError(f"{spec.name}: chunk {i} has a bad coder or size")
            jobs.append((chunk, offset, offset + size, f"{spec.name}: chunk {i}"))
            offset += size
        if offset != spec.nbytes:
            raise CorruptArtifactError(f"{spec.name}: chunks hold {offset} bytes, expected {spec.nbytes}")

        def job(task) -> None:
            chunk, a, b, what = task
            payload = chunk.payload  # may be read from the artifact now: once
            if chunk.coder == "raw":
                if len(payload) != b - a:
                    raise CorruptArtifactError(f"{what}: raw chunk has the wrong size")
                out[a:b] = payload
            else:
                self._decode_chunk(payload, chunk.meta, base[a:b] if base is not None else None, out[a:b],
                                   item, what)

        for _ in iter_ordered(job, jobs, resolve_threads(threads), lambda: check_cancel(cancel)):
            pass


class ZstdCodec(_ChunkedByteCodec):
    codec_id = "zstd"
    coder = "zstd"
    description = "The fine-tuned checkpoint alone through zstd (baseline; needs no base)."
    params = (
        Param("level", int, 3, "zstd compression level", minimum=1, maximum=19),
        Param("chunk_bytes", int, 4 << 20, "bytes per independently coded chunk", minimum=4096, maximum=1 << 28),
    )

    def _encode_chunk(self, data, base, item, cancel=None):
        return zstd_compress(data, self.level, cancel), {}

    def _decode_chunk(self, payload, meta, base, out, item, what):
        out[:] = zstd_decompress(payload, out.nbytes, what)


class XorZstdCodec(_ChunkedByteCodec):
    codec_id = "xor-zstd"
    coder = "planes"
    needs_base = True
    description = "XOR with the base, bytes split into planes, zstd (baseline delta coder)."
    params = (
        Param("level", int, 1, "zstd compression level", minimum=1, maximum=19),
        Param("chunk_bytes", int, 4 << 20, "bytes per independently coded chunk", minimum=4096, maximum=1 << 28),
    )

    def _encode_chunk(self, data, base, item, cancel=None):
        return planes_encode(data, base, item, self.level, cancel), {"xor": base is not None}

    def _decode_chunk(self, payload, meta, base, out, item, what):
        xor = meta.get("xor")
        if not isinstance(xor, bool):
            raise CorruptArtifactError(f"{what}: bad planes meta")
        if xor and base is None:
            raise WrongBaseError(f"{what}: coded against a base tensor, but none was given")
        planes_decode(payload, base if xor else None, out, item, what)
