"""FM-Delta: lossless coding of fine-tuned float weights against the base weights at the same index.

The symbol scheme is FM-Delta's (order-preserving map of the float bits, symbol = sign and bit length of the
difference, low bits raw); the coder is ours (``native/fmdelta``): independent chunks, a static per-chunk model
conditioned on the base value's exponent, a 4-way interleaved rANS coder, and common zero mantissa bits shifted out
(bf16/fp16 weights stored as fp32 cost about what they would as bf16). See ``codecs/README.md``.

Per chunk, ``EncodedChunk.coder`` is one of

* ``"fmdelta"``  -- native FM-Delta payload (float dtypes with a base);
* ``"fields"``   -- native payload without a base (every float dtype): the exponent rANS-coded with the previous
  element's exponent as context, the sign and top 7 mantissa bits with the element's exponent as context, the rest
  of the mantissa raw (base models, new or resized tensors);
* ``"exponent"`` -- the older no-base payload (exponent coded, sign and mantissa raw): decoded, no longer written;
* ``"planes"``   -- the chunk's bytes (XORed with the base when ``meta["xor"]``) split into byte planes and
  compressed with zstd (integers, bools, and floats without a base whose fields coding already shrank them more
  than 8x, such as zeros, when planes do better still);
* ``"raw"``     -- the bytes as they are, when neither pays.

``meta["n"]`` is the chunk's element count. Decoding validates every chunk against the tensor spec and turns any
inconsistency into :class:`CorruptArtifactError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from . import _fmdelta
from ._bytecoding import planes_decode, planes_encode
from ._threads import iter_ordered, resolve_threads
from .abc import DTYPE_SIZES, FLOAT_DTYPES, CancelCheck, Codec, EncodedChunk, Param, TensorSpec, check_cancel
from .errors import CorruptArtifactError, ModelFormatError, UnsupportedDtypeError, WrongBaseError

CODERS = frozenset({"fmdelta", "fields", "exponent", "planes", "raw"})
# float dtypes the older no-base (exponent) payloads exist for: an exponent field of at most 8 bits
EXPONENT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32"})
ZSTD_LEVEL = 3


def _as_bytes_view(buf: Any, what: str) -> memoryview:
    try:
        view = memoryview(buf)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
    except TypeError as exc:
        raise ModelFormatError(f"{what} must be a C-contiguous bytes-like object: {exc}") from None
    return view


# -- the codec -----------------------------------------------------------------------------------------------------

class FMDeltaCodec(Codec):
    """FM-Delta with exponent contexts, rANS, independent chunks and zero-mantissa shifting (lossless)."""

    codec_id = "fmdelta"
    lossless = True
    needs_base = True
    chunks_decode_alone = True
    description = (
        "Lossless FM-Delta: each fine-tuned float is coded against the base float at the same index (order-"
        "preserving bit map, difference split into a coded bit length and raw low bits), with a per-chunk model "
        "conditioned on the base exponent, rANS coding, and bf16-in-fp32 mantissa shifting. Floats without a base "
        "get their exponents entropy-coded; integers use XOR + byte planes + zstd."
    )
    params = (
        Param("chunk_elements", int, 1 << 20, "elements per independently decodable chunk",
              minimum=4096, maximum=1 << 26),
        Param("context", str, "exponent", "condition the symbol model on the base value's exponent, or not",
              choices=("exponent", "none")),
        Param("shift_zero_mantissa", bool, True,
              "shift out mantissa low bits that are zero in base and fine-tune (bf16/fp16 weights stored as fp32)"),
    )

    # -- encoding -----------------------------------------------------------------------------------------------
    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        item = self._item_size(spec)
        data = _as_bytes_view(data, "data")
        if data.nbytes != spec.nbytes:
            raise ModelFormatError(f"{spec.name}: got {data.nbytes} bytes, {spec.dtype}{list(spec.shape)} "
                                   f"needs {spec.nbytes}")
        if base is not None:
            base = _as_bytes_view(base, "base")
            if base.nbytes != spec.nbytes:
                raise WrongBaseError(f"{spec.name}: base has {base.nbytes} bytes, expected {spec.nbytes}")
        nthreads = resolve_threads(threads)
        n = spec.numel
        step = self.chunk_elements
        bounds = [(start, min(n, start + step)) for start in range(0, n, step)]
        use_native = spec.dtype in FLOAT_DTYPES and base is not None
        use_fields = spec.dtype in FLOAT_DTYPES and base is None
        context = self.context == "exponent"
        shift = self.shift_zero_mantissa

        def job(bound: tuple[int, int]) -> EncodedChunk:
            a, b = bound[0] * item, bound[1] * item
            chunk = data[a:b]
            count = bound[1] - bound[0]
            if use_native:
                payload = _fmdelta.encode(chunk, base[a:b], spec.dtype, context, shift)
                coder, meta = "fmdelta", {"n": count}
            elif use_fields:
                payload = _fmdelta.encode(chunk, None, spec.dtype, context, shift)
                coder, meta = "fields", {"n": count}
                if len(payload) * 8 < b - a:  # degenerate floats (zeros, constants): byte planes may do far better
                    planes = planes_encode(chunk, None, item, ZSTD_LEVEL)
                    if len(planes) < len(payload):
                        payload, coder, meta = planes, "planes", {"n": count, "xor": False}
            else:
                payload = planes_encode(chunk, base[a:b] if base is not None else None, item, ZSTD_LEVEL)
                coder, meta = "planes", {"n": count, "xor": base is not None}
            if len(payload) >= b - a:  # coding did not pay: store the bytes
                return EncodedChunk("raw", bytes(chunk), {"n": count})
            return EncodedChunk(coder, payload, meta)

        yield from iter_ordered(job, bounds, nthreads, lambda: check_cancel(cancel))

    # -- decoding -----------------------------------------------------------------------------------------------
    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        item = self._item_size(spec)
        out = _as_bytes_view(out, "out")
        if out.readonly:
            raise ModelFormatError("fmdelta: destination buffer is read-only")
        if out.nbytes != spec.nbytes:
            raise ModelFormatError(f"fmdelta: destination has {out.nbytes} bytes, {spec.name} needs {spec.nbytes}")
        if base is not None:
            base = _as_bytes_view(base, "base")
            if base.nbytes != spec.nbytes:
                raise WrongBaseError(f"{spec.name}: base has {base.nbytes} bytes, expected {spec.nbytes}")
        jobs = self._plan(spec, chunks, base, item)
        nthreads = resolve_threads(threads)

        def job(task: tuple[EncodedChunk, int, int]) -> None:
            chunk, a, b = task
            dst = out[a:b]
            payload = chunk.payload  # may be read from the artifact now: once
            if not isinstance(payload, (bytes, bytearray, memoryview)):
                raise CorruptArtifactError(f"{spec.name}: chunk payload is not bytes")
            if chunk.coder == "raw":
                if len(payload) != b - a:
                    raise CorruptArtifactError(f"{spec.name}: raw chunk has {len(payload)} bytes, expected {b - a}")
                dst[:] = payload
            elif chunk.coder == "fmdelta":
                _fmdelta.decode(payload, base[a:b], dst, spec.dtype)
            elif chunk.coder in ("fields", "exponent"):
                _fmdelta.decode(payload, None, dst, spec.dtype)
            else:
                planes_decode(payload, base[a:b] if chunk.meta["xor"] else None, dst, item,
                              f"{spec.name}: planes chunk")

        for _ in iter_ordered(job, jobs, nthreads, lambda: check_cancel(cancel)):
            pass

    # -- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _item_size(spec: TensorSpec) -> int:
        try:
            return DTYPE_SIZES[spec.dtype]
        except KeyError:
            raise UnsupportedDtypeError(f"fmdelta: unsupported dtype {spec.dtype!r}") from None

    @staticmethod
    def _plan(spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
              item: int) -> list[tuple[EncodedChunk, int, int]]:
        """Validate every chunk's coder and meta against the spec; return (chunk, byte start, byte end)."""
        jobs = []
        offset = 0
        numel = spec.numel
        for index, chunk in enumerate(chunks):
            where = f"{spec.name}: chunk {index}"
            if not isinstance(chunk, EncodedChunk) or chunk.coder not in CODERS:
                raise CorruptArtifactError(f"{where}: unknown coder {getattr(chunk, 'coder', None)!r}")
            meta = chunk.meta if isinstance(chunk.meta, dict) else {}
            count = meta.get("n")
            if isinstance(count, bool) or not isinstance(count, int) or count < 1 or count > numel - offset:
                raise CorruptArtifactError(f"{where}: bad element count {count!r}")
            if chunk.coder == "fmdelta":
                if spec.dtype not in FLOAT_DTYPES:
                    raise CorruptArtifactError(f"{where}: fmdelta chunk for a {spec.dtype} tensor")
                if base is None:
                    raise WrongBaseError(f"{spec.name}: this tensor was coded against a base; none was given")
            elif chunk.coder == "fields":
                if spec.dtype not in FLOAT_DTYPES:
                    raise CorruptArtifactError(f"{where}: fields chunk for a {spec.dtype} tensor")
            elif chunk.coder == "exponent":
                if spec.dtype not in EXPONENT_DTYPES:
                    raise CorruptArtifactError(f"{where}: exponent chunk for a {spec.dtype} tensor")
            elif chunk.coder == "planes":
                xor = meta.get("xor")
                if not isinstance(xor, bool):
                    raise CorruptArtifactError(f"{where}: bad planes meta {meta!r}")
                if xor and base is None:
                    raise WrongBaseError(f"{spec.name}: this tensor was coded against a base; none was given")
            jobs.append((chunk, offset * item, (offset + count) * item))
            offset += count
        if offset != numel:
            raise CorruptArtifactError(f"{spec.name}: chunks hold {offset} elements, expected {numel}")
        return jobs


class FMDeltaNoBaseCodec(FMDeltaCodec):
    """FM-Delta without a base: every float tensor coded by its bit fields (lossless; base models, checkpoints)."""

    codec_id = "fmdelta-nobase"
    needs_base = False
    description = (
        "Lossless FM-Delta without a base, for base models and first checkpoints: each float (bf16, fp16, fp32, "
        "fp8, fp64) is split into its bit fields; the exponent is rANS-coded with the previous weight's exponent as "
        "context, the sign and top mantissa bits with the weight's own exponent as context, the rest stored raw. "
        "Integers use byte planes + zstd. Same payloads as fmdelta's tensors without a base."
    )
    params = (
        Param("chunk_elements", int, 1 << 22, "elements per independently decodable chunk",
              minimum=4096, maximum=1 << 26),
        Param("shift_zero_mantissa", bool, True,
              "shift out mantissa low bits that are zero in every value (bf16/fp16 weights stored as fp32)"),
    )
    context = "exponent"  # the fields mode always uses its contexts; fmdelta's option is about the base

    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        return super().encode_tensor(spec, data, None, threads=threads, cancel=cancel)


def symbol_entropy_bound(data: Any, base: Any, dtype: str) -> float:
    """Order-0 entropy, in bytes, of the reference FM-Delta symbols of ``data`` against ``base`` (one model for
    the whole buffer, no context, no shift) plus their raw bits: the yardstick for this codec's ratio."""
    if dtype not in _fmdelta.DTYPE_CODES:
        raise UnsupportedDtypeError(f"symbol_entropy_bound: {dtype!r} is not a float dtype")
    data = _as_bytes_view(data, "data")
    base = _as_bytes_view(base, "base")
    import numpy as np  # only the benchmark needs it: the command line starts faster without it

    hist, raw_bits = _fmdelta.reference_stats_of(data, base, dtype)
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum()
    counts = counts[counts > 0]
    bits = float((counts * np.log2(total / counts)).sum()) if total else 0.0
    return (bits + raw_bits) / 8.0


__all__ = ["FMDeltaCodec", "FMDeltaNoBaseCodec", "symbol_entropy_bound"]
