"""BitDelta: the linear weights inside a causal LM's blocks become 1-bit signs of Δ = W_ft − W_base plus fp32
scales (one per matrix, or one per output row); everything else is coded losslessly with FM-Delta.

Wire format of a binarised tensor: one chunk, ``coder = "signs"``, ``meta = {"n": numel, "scales": k, "axis": a}``;
the payload is ``k`` little-endian fp32 scales followed by ``ceil(numel / 8)`` bytes of sign bits, in the tensor's
storage order, 8 per byte, least significant bit first. Bit 1 means Δ > 0 (+α), bit 0 means Δ ≤ 0 (−α): Δ == 0
maps to −1, the paper's convention. ``k`` is 1 (matrix) or the size of the output axis ``a`` (0 for
``nn.Linear``, 1 for GPT-2's ``Conv1D``), scale ``i`` applying to output feature ``i``.

Decoding writes ``W_base + α·S`` computed in fp32 (fp64 for F64 tensors) and rounded once to the fine-tune's dtype
(round to nearest even). The distillation's student computes exactly the same fp32 weight, so an fp32 student
scores what the restored model scores. Other tensors' chunks are FM-Delta's (``fmdelta``, ``exponent``,
``planes``, ``raw``), decoded by :class:`~modelcodecs.fmdelta.FMDeltaCodec`. With ``train_rest`` the distillation
also trains those tensors: they are stored as trained (FM-Delta against the base, still bit-exact to the student),
behind an empty ``trained`` chunk that marks them as differing from the fine-tune.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .._torch import DEVICE_CHOICES
from ..abc import CancelCheck, Codec, EncodedChunk, Param, ProgressCallback, TensorSpec, check_cancel
from ..errors import ConfigError, CorruptArtifactError, ModelFormatError, WrongBaseError
from ..fmdelta import FMDeltaCodec, _as_bytes_view

SIGNS = "signs"
TRAINED = "trained"  # an empty first chunk: the tensor's values are the distillation's, not the fine-tune's
BINARISABLE_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


# -- the arithmetic shared by encoder, decoder and the distillation's student ---------------------------------------

def to_float(data, dtype: str) -> np.ndarray:
    """The float values of raw little-endian ``data`` of a float ``dtype``, as fp32 (fp64 for F64)."""
    view = _as_bytes_view(data, "data")
    if dtype == "BF16":
        return (np.frombuffer(view, np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(view, {"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype]).astype(
        np.float64 if dtype == "F64" else np.float32, copy=False)


def write_float(values: np.ndarray, dtype: str, out: memoryview) -> None:
    """Round fp32/fp64 ``values`` to ``dtype`` (nearest even) and write their bytes into ``out``."""
    target = np.frombuffer(out, np.uint8)
    if dtype == "BF16":
        bits = values.astype(np.float32, copy=False).reshape(-1).view(np.uint32)
        rounded = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
        nan = np.isnan(values.reshape(-1))
        if nan.any():
            rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
        target[:] = rounded.view(np.uint8)
    else:
        np_dtype = {"F16": np.float16, "F32": np.float32, "F64": np.float64}[dtype]
        target[:] = values.reshape(-1).astype(np_dtype, copy=False).view(np.uint8)


def scale_shape(shape: tuple[int, ...], axis: int, count: int) -> tuple[int, ...]:
    """How ``count`` scales broadcast over a 2-D weight of ``shape`` with output axis ``axis``."""
    if count == 1:
        return (1, 1)
    return (shape[0], 1) if axis == 0 else (1, shape[1])


def initial_scales(delta: np.ndarray, axis: int, granularity: str) -> np.ndarray:
    """BitDelta-Initial: α = mean|Δ| over the matrix (or over each output row), which minimises ‖Δ − α·S‖²."""
    magnitude = np.abs(delta)  # summed in the delta's precision (numpy sums pairwise: error ~ log2(n) ulp)
    if granularity == "matrix":
        return np.array([magnitude.mean()], dtype=np.float32)
    return magnitude.mean(axis=1 - axis).astype(np.float32)


def reconstruct(base: np.ndarray, positive: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    """``W_base + α·S`` in ``base``'s precision (S = +1 where ``positive``, else −1)."""
    alpha = scales.astype(base.dtype).reshape(scale_shape(base.shape, axis, scales.size))
    step = positive.astype(base.dtype)  # 1 where positive, else 0: base + (2 * step - 1) * alpha, exactly ±alpha
    step *= 2
    step -= 1
    step *= alpha
    step += base
    return step


def pack_signs(positive: np.ndarray) -> bytes:
    return np.packbits(positive.reshape(-1), bitorder="little").tobytes()


def unpack_signs(packed, count: int, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(packed, np.uint8), count=count, bitorder="little")
    return bits.view(np.bool_).reshape(shape)


# -- the codec -----------------------------------------------------------------------------------------------------

class BitDeltaCodec(Codec):
    """BitDelta with scale distillation (lossy for the binarised weights, lossless for everything else)."""

    codec_id = "bitdelta"
    lossless = False
    needs_base = True
    runs_models = True
    description = (
        "BitDelta: each linear weight inside the transformer blocks becomes the sign bits of its delta to the base "
        "plus fp32 scales, distilled on calibration text so the 1-bit model's logits match the fine-tune's; "
        "embeddings, lm_head, norms, biases and buffers are coded losslessly with FM-Delta."
    )
    params = (
        Param("steps", int, 200, "distillation steps (0 = BitDelta-Initial, scales = mean |delta|)",
              minimum=0, maximum=100_000),
        Param("batch_size", int, 4, "sequences per distillation step", minimum=1, maximum=512),
        Param("seq_len", int, 128, "tokens per sequence", minimum=2, maximum=8192),
        Param("lr", float, 1e-4, "AdamW learning rate (cosine schedule to 0)", minimum=0.0, maximum=1.0),
        Param("loss", str, "mse", "distillation loss between student and teacher logits", choices=("mse", "kl")),
        Param("scale_granularity", str, "matrix", "one scale per matrix (the paper) or per output row",
              choices=("matrix", "row")),
        Param("include", str, "", "comma-separated fnmatch patterns of weight names to binarise (empty = all "
              "linear weights inside the blocks)"),
        Param("exclude", str, "", "comma-separated fnmatch patterns of weight names to keep lossless"),
        Param("train_rest", bool, False, "also train the tensors that are not binarised (embeddings, lm_head, "
              "norms, biases), as the reference does; they then differ from the fine-tune and are stored as trained"),
        Param("device", str, "auto", "where distillation runs: auto = CUDA when torch sees one",
              choices=DEVICE_CHOICES),
        Param("seed", int, 0, "seed of the calibration batch order and of torch", minimum=0, maximum=2**31 - 1),
    )

    def __init__(self, **config):
        super().__init__(**config)
        self._lossless = FMDeltaCodec()
        # tensor name -> (output axis, distilled scales or None for BitDelta-Initial); set by prepare()
        self._plan: dict[str, tuple[int, np.ndarray | None]] | None = None
        self._trained: dict[str, np.ndarray] = {}  # with train_rest: other tensors' trained values, fp32
        self.report: dict = {}

    def calibration_tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len

    # -- model level ---------------------------------------------------------------------------------------------
    def prepare(self, *, finetuned_dir: str, base_dir: str | None, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, calibration_text: str | None = None,
                on_step: Callable[[dict], None] | None = None) -> dict:
        """Find the binarised weights from the fine-tune's structure, check the base has them, and (``steps`` >
        0) distil their scales on ``calibration_text``. Returns the distillation report."""
        from .distill import distill_scales, plan_weights

        if base_dir is None:
            raise ConfigError("bitdelta needs the base model")
        started = time.perf_counter()
        weights = plan_weights(finetuned_dir, base_dir, include=self.include, exclude=self.exclude)
        scales: dict[str, np.ndarray] = {}
        self._trained = {}
        report = {"binarised_tensors": len(weights), "steps": self.steps}
        if self.steps > 0:
            if calibration_text is None:
                raise ConfigError(f"bitdelta with steps={self.steps} needs calibration text (a dataset)")
            scales, self._trained, distilled = distill_scales(self, finetuned_dir=finetuned_dir, base_dir=base_dir,
                                               weights=weights, text_path=calibration_text, progress=progress,
                                               cancel=cancel, on_step=on_step)
            report.update(distilled)
        self._plan = {w.tensor: (w.out_axis, scales.get(w.tensor)) for w in weights}
        report["prepare_seconds"] = round(time.perf_counter() - started, 3)
        self.report = report
        return report

    # -- encoding --------------------------------------------------------------------------------------------------
    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        planned = None if self._plan is None else self._plan.get(spec.name)
        if planned is None or base is None or spec.dtype not in BINARISABLE_DTYPES or len(spec.shape) != 2:
            if self._plan is None and base is not None:
                raise ConfigError("bitdelta: prepare() must run before tensors are encoded")
            trained = self._trained.get(spec.name)
            if trained is not None and spec.dtype in BINARISABLE_DTYPES and trained.size == spec.numel:
                data = bytearray(spec.nbytes)
                write_float(trained, spec.dtype, memoryview(data))
                yield EncodedChunk(TRAINED, b"")
            yield from self._lossless.encode_tensor(spec, data, base, threads=threads, cancel=cancel)
            return
        check_cancel(cancel)
        axis, scales = planned
        data, base = _as_bytes_view(data, "data"), _as_bytes_view(base, "base")
        if data.nbytes != spec.nbytes or base.nbytes != spec.nbytes:
            raise ModelFormatError(f"{spec.name}: fine-tune or base has the wrong size for {spec.dtype}"
                                   f"{list(spec.shape)}")
        delta = to_float(data, spec.dtype).reshape(spec.shape) - to_float(base, spec.dtype).reshape(spec.shape)
        if scales is None:
            scales = initial_scales(delta, axis, self.scale_granularity)
        payload = scales.astype("<f4").tobytes() + pack_signs(delta > 0)
        yield EncodedChunk(SIGNS, payload, {"n": spec.numel, "scales": int(scales.size), "axis": axis})

    # -- decoding --------------------------------------------------------------------------------------------------
    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        if not any(getattr(chunk, "coder", None) == SIGNS for chunk in chunks):
            if chunks and getattr(chunks[0], "coder", None) == TRAINED:
                chunks = chunks[1:]
            self._lossless.decode_tensor(spec, chunks, base, out, threads=threads, cancel=cancel)
            return
        check_cancel(cancel)
        chunk, count, axis = self._check_signs(spec, chunks)
        if base is None:
            raise WrongBaseError(f"{spec.name}: this tensor is binarised against a base; none was given")
        base = _as_bytes_view(base, "base")
        out = _as_bytes_view(out, "out")
        if base.nbytes != spec.nbytes:
            raise WrongBaseError(f"{spec.name}: base has {base.nbytes} bytes, expected {spec.nbytes}")
        if out.nbytes != spec.nbytes or out.readonly:
            raise ModelFormatError(f"bitdelta: destination for {spec.name} is read-only or of the wrong size")
        payload = chunk.payload
        scales = np.frombuffer(payload, "<f4", count=count).astype(np.float32)
        positive = unpack_signs(memoryview(payload)[4 * count:], spec.numel, spec.shape)
        restored = reconstruct(to_float(base, spec.dtype).reshape(spec.shape), positive, scales, axis)
        write_float(restored, spec.dtype, out)

    def exact_tensor(self, coders: Sequence[str]) -> bool:
        return SIGNS not in coders and TRAINED not in coders

    @staticmethod
    def _check_signs(spec: TensorSpec, chunks: Sequence[EncodedChunk]) -> tuple[EncodedChunk, int, int]:
        where = f"{spec.name}: signs chunk"
        if len(chunks) != 1:
            raise CorruptArtifactError(f"{where} must be the tensor's only chunk")
        chunk = chunks[0]
        meta = chunk.meta if isinstance(chunk.meta, dict) else {}
        count, axis = meta.get("scales"), meta.get("axis")
        if spec.dtype not in BINARISABLE_DTYPES or len(spec.shape) != 2 or meta.get("n") != spec.numel:
            raise CorruptArtifactError(f"{where} for a {spec.dtype}{list(spec.shape)} tensor")
        if axis not in (0, 1) or isinstance(axis, bool) or count not in (1, spec.shape[axis]):
            raise CorruptArtifactError(f"{where}: bad meta {meta!r}")
        if chunk.nbytes != 4 * count + (spec.numel + 7) // 8:
            raise CorruptArtifactError(f"{where}: {chunk.nbytes} bytes, expected {4 * count + (spec.numel + 7) // 8}")
        return chunk, count, axis


__all__ = ["BitDeltaCodec"]
