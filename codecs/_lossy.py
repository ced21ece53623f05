"""What the lossy weight codecs (``hyper``, ``rtn``) share: which tensors are quantised, the lossless coding of
every other tensor (FM-Delta inside), weights or delta mode, the raw fallback, the per-tensor error report and the
float <-> dtype conversions. The per-weight loops (quantise, bit-pack, unpack, dequantise, error sums) are native
kernels (``native/lossy``, module ``modelcodecs._lossy_kernels``) run on contiguous float32 buffers in place.

A subclass says how one block of float32 values is quantised (:meth:`LossyWeightCodec._encode_block`, which also
writes the values its decoder will produce, so the error is measured without decoding) and restored
(:meth:`LossyWeightCodec._decode_block`), and what is computed once per tensor (:meth:`_tensor_side`). Every
quantised chunk is self-contained: its ``meta`` holds the per-tensor side information and the block's, so a chunk
decodes alone and a chunk whose side information is cut raises :class:`CorruptArtifactError`.

Kept losslessly (FM-Delta against the base when one is given, else its exponent/zstd coders): 1-D tensors (norms,
biases), integer and bool tensors, fp8 tensors, tensors excluded by pattern, tensors holding NaN or Inf, and
tensors whose mean absolute error would exceed ``max_error``. The last two are listed in :meth:`encode_report`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Sequence

import numpy as np

from . import _lossy_kernels as _kernels
from ._threads import iter_ordered, resolve_threads
from .abc import DTYPE_SIZES, CancelCheck, Codec, EncodedChunk, Param, TensorSpec, check_cancel
from .errors import ConfigError, CorruptArtifactError, ModelFormatError, WrongBaseError
from .fmdelta import FMDeltaCodec

QUANTISED_DTYPES = ("F16", "BF16", "F32", "F64")


# -- float <-> stored dtype ----------------------------------------------------------------------------------------

def to_float32(buf, dtype: str) -> np.ndarray:
    """The tensor's values as float32 (F64 is narrowed: the quantisers work in float32)."""
    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    values = raw.view({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype]).astype(np.float32, copy=False)
    # float32 is used in place (no copy) unless misaligned: the native kernels read aligned floats
    return values if values.flags.aligned else values.copy()


def from_float32(values: np.ndarray, dtype: str, out: memoryview) -> None:
    """Write float32 ``values`` into ``out`` in ``dtype`` (bf16 rounded to nearest, ties to even)."""
    dst = np.frombuffer(out, dtype=np.uint8)
    if dtype == "BF16":
        bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16
        nan = np.isnan(values)
        if nan.any():
            rounded[nan] = (bits[nan] >> 16) | np.uint32(0x40)
        dst.view("<u2")[:] = rounded.astype(np.uint16)
    else:
        dst.view({"F16": "<f2", "F32": "<f4", "F64": "<f8"}[dtype])[:] = values


# -- side information checks (every decoder reads meta through these) ----------------------------------------------

def meta_number(meta: dict, key: str, what: str, *, integer: bool = False, low: float | None = None,
                high: float | None = None) -> float | int:
    value = meta.get(key)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or (low is not None and value < low) or (high is not None and value > high):
        raise CorruptArtifactError(f"{what}: side information {key!r} is missing or invalid ({value!r})")
    return value


def _patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


class LossyWeightCodec(Codec):
    """Base of the lossy weight codecs; see the module docstring."""

    lossless = False
    # parameters every lossy weight codec has (subclasses append their own)
    common_params = (
        Param("on_delta", bool, False, "quantise delta = fine-tune - base instead of the weights (needs the base)"),
        Param("max_error", float, 0.0, "store a tensor losslessly when its mean absolute error would exceed this "
              "(0: never)", minimum=0.0),
        Param("include", str, "", "comma-separated name patterns (fnmatch) to quantise; empty: every >=2-D float "
              "tensor"),
        Param("exclude", str, "", "comma-separated name patterns (fnmatch) kept lossless"),
        Param("chunk_elements", int, 1 << 20, "elements per independently decodable chunk",
              minimum=4096, maximum=1 << 26),
    )
    # elements a chunk must hold a whole number of (hyper: pairs; rtn: groups)
    _unit = 1

    def __init__(self, **config):
        super().__init__(**config)
        # delta mode needs the base to encode and decode; weights mode never uses it
        self.needs_base = self.on_delta
        self._lossless = FMDeltaCodec(chunk_elements=self.chunk_elements)
        self._report = self._empty_report()

    # -- which tensors ------------------------------------------------------------------------------------------
    def quantises(self, spec: TensorSpec) -> bool:
        """True when ``spec`` is a tensor this codec quantises (>= 2-D float of an allowed name)."""
        if spec.dtype not in QUANTISED_DTYPES or len(spec.shape) < 2 or spec.numel < 2:
            return False
        include, exclude = _patterns(self.include), _patterns(self.exclude)
        if include and not any(fnmatch.fnmatchcase(spec.name, p) for p in include):
            return False
        return not any(fnmatch.fnmatchcase(spec.name, p) for p in exclude)

    # -- subclass hooks -----------------------------------------------------------------------------------------
    def _unit_for(self, spec: TensorSpec) -> int:
        """A chunk holds a whole number of these many elements."""
        return self._unit

    def _tensor_side(self, values: np.ndarray, spec: TensorSpec) -> dict:
        """Side information computed once per tensor from all its values (JSON numbers)."""
        return {}

    def _encode_block(self, block: np.ndarray, side: dict, spec: TensorSpec, restored: np.ndarray) \
            -> tuple[bytes, dict]:
        """Quantise ``block`` (contiguous float32); write into ``restored`` exactly what the decoder will produce."""
        raise NotImplementedError

    def _decode_block(self, payload, meta: dict, spec: TensorSpec, what: str, out: np.ndarray) -> None:
        """Decode a chunk into ``out`` (contiguous float32, the chunk's element count)."""
        raise NotImplementedError

    # -- report -------------------------------------------------------------------------------------------------
    @staticmethod
    def _empty_report() -> dict:
        return {"quantised_tensors": 0, "quantised_weights": 0, "lossless_tensors": 0, "lossless_weights": 0,
                "raw_fallback": [], "sum_sq_error": 0.0, "sum_sq_weight": 0.0, "sum_abs_error": 0.0}

    def prepare(self, **kwargs) -> None:
        self._report = self._empty_report()

    def encode_report(self) -> dict:
        """What the last model's encoding did: quantised/lossless counts, the tensors stored losslessly because
        of NaN/Inf or ``max_error`` (with why), and the relative weight error ||w - w'|| / ||w|| over every
        quantised tensor (in weights mode w is the weight, in delta mode too: the error of the restored weight)."""
        r = dict(self._report)
        sq, wt = r.pop("sum_sq_error"), r.pop("sum_sq_weight")
        absolute = r.pop("sum_abs_error")
        r["relative_weight_error"] = math.sqrt(sq / wt) if wt > 0 else 0.0
        r["mean_abs_error"] = absolute / r["quantised_weights"] if r["quantised_weights"] else 0.0
        return r

    # -- encoding -----------------------------------------------------------------------------------------------
    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        data = memoryview(data).cast("B")
        if data.nbytes != spec.nbytes:
            raise ModelFormatError(f"{spec.name}: got {data.nbytes} bytes, {spec.dtype}{list(spec.shape)} "
                                   f"needs {spec.nbytes}")
        if base is not None:
            base = memoryview(base).cast("B")
            if base.nbytes != spec.nbytes:
                raise WrongBaseError(f"{spec.name}: base has {base.nbytes} bytes, expected {spec.nbytes}")
        if not self.quantises(spec):
            yield from self._keep(spec, data, base, threads, cancel, None)
            return
        weights = to_float32(data, spec.dtype)
        if not np.isfinite(weights).all():
            yield from self._keep(spec, data, base, threads, cancel, {"reason": "NaN or Inf values"})
            return
        reference = to_float32(base, spec.dtype) if self.on_delta and base is not None else None
        target = weights - reference if reference is not None else weights
        chunks, restored = self._quantise(spec, target, reference, threads, cancel)
        sq_error, abs_error, sq_weight = _kernels.error_totals(restored, weights)
        mean_abs = abs_error / spec.numel
        if not math.isfinite(mean_abs) or (self.max_error > 0 and mean_abs > self.max_error):
            yield from self._keep(spec, data, base, threads, cancel,
                                  {"reason": f"mean absolute error {mean_abs:.3g} > max_error {self.max_error:g}",
                                   "mean_abs_error": mean_abs})
            return
        r = self._report
        r["quantised_tensors"] += 1
        r["quantised_weights"] += spec.numel
        r["sum_sq_error"] += sq_error
        r["sum_sq_weight"] += sq_weight
        r["sum_abs_error"] += abs_error
        yield from chunks

    def _keep(self, spec, data, base, threads, cancel, fallback: dict | None) -> Iterator[EncodedChunk]:
        """Code the tensor losslessly; a fallback (why it was not quantised) is recorded in the report and in the
        first chunk's meta, so the artifact says which tensors were stored raw."""
        r = self._report
        r["lossless_tensors"] += 1
        r["lossless_weights"] += spec.numel
        if fallback is not None:
            r["raw_fallback"].append({"name": spec.name, **fallback})
        for index, chunk in enumerate(self._lossless.encode_tensor(spec, data, base, threads=threads,
                                                                   cancel=cancel)):
            if index == 0 and fallback is not None:
                chunk.meta = {**chunk.meta, "fallback": fallback["reason"]}
            yield chunk

    def _bounds(self, spec: TensorSpec) -> list[tuple[int, int]]:
        unit = self._unit_for(spec)
        step = max(unit, self.chunk_elements // unit * unit)
        return [(a, min(spec.numel, a + step)) for a in range(0, spec.numel, step)]

    def _quantise(self, spec, target, reference, threads, cancel) -> tuple[list[EncodedChunk], np.ndarray]:
        side = {**self._tensor_side(target, spec), "delta": reference is not None}
        restored = np.empty_like(target)

        def job(bound: tuple[int, int]) -> EncodedChunk:
            a, b = bound
            # the error is measured on what the decoder will produce, in the tensor's own dtype
            payload, meta = self._encode_block(target[a:b], side, spec, restored[a:b])
            return EncodedChunk(self.codec_id, payload, {"n": b - a, **side, **meta})

        chunks = list(iter_ordered(job, self._bounds(spec), resolve_threads(threads), lambda: check_cancel(cancel)))
        if reference is not None:
            restored += reference
        return chunks, self._round_trip_dtype(restored, spec.dtype)

    @staticmethod
    def _round_trip_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
        if dtype == "F32":
            return values
        buf = bytearray(values.size * DTYPE_SIZES[dtype])
        from_float32(values, dtype, memoryview(buf))
        return to_float32(buf, dtype)

    # -- decoding -----------------------------------------------------------------------------------------------
    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        if not chunks or chunks[0].coder != self.codec_id:
            self._lossless.decode_tensor(spec, chunks, base, out, threads=threads, cancel=cancel)
            return
        out = memoryview(out).cast("B")
        if out.nbytes != spec.nbytes:
            raise ModelFormatError(f"{self.codec_id}: destination has {out.nbytes} bytes, {spec.name} needs "
                                   f"{spec.nbytes}")
        if spec.dtype not in QUANTISED_DTYPES:
            raise CorruptArtifactError(f"{spec.name}: a {self.codec_id} chunk for a {spec.dtype} tensor")
        plan, offset, delta = [], 0, None
        for index, chunk in enumerate(chunks):
            what = f"{spec.name}: chunk {index}"
            if chunk.coder != self.codec_id or not isinstance(chunk.meta, dict):
                raise CorruptArtifactError(f"{what}: unexpected coder {chunk.coder!r}")
            count = meta_number(chunk.meta, "n", what, integer=True, low=1, high=spec.numel - offset)
            is_delta = chunk.meta.get("delta")
            if not isinstance(is_delta, bool) or (delta is not None and is_delta != delta):
                raise CorruptArtifactError(f"{what}: side information 'delta' is missing or inconsistent")
            delta = is_delta
            plan.append((chunk, offset, count, what))
            offset += count
        if offset != spec.numel:
            raise CorruptArtifactError(f"{spec.name}: chunks hold {offset} elements, expected {spec.numel}")
        if delta and base is None:
            raise WrongBaseError(f"{spec.name}: this tensor was quantised as a delta against the base; none was given")
        # a float32 tensor is decoded straight into an aligned destination (the kernels store aligned floats)
        direct = np.frombuffer(out, dtype=np.float32) if spec.dtype == "F32" else None
        in_place = direct is not None and direct.flags.aligned
        values = direct if in_place else np.empty(spec.numel, np.float32)

        def job(task) -> None:
            chunk, a, count, what = task
            self._decode_block(chunk.payload, chunk.meta, spec, what, values[a:a + count])

        for _ in iter_ordered(job, plan, resolve_threads(threads), lambda: check_cancel(cancel)):
            pass
        if delta:
            values += to_float32(memoryview(base).cast("B"), spec.dtype)
        if not in_place:
            from_float32(values, spec.dtype, out)


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")


__all__ = ["LossyWeightCodec", "check_positive", "from_float32", "meta_number", "to_float32"]
