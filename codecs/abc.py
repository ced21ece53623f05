"""The one codec interface shared by every codec in DeltaVault.

A codec is a small class with an id and a config (numcodecs style). The config is the constructor: every public
attribute is a keyword argument declared as a :class:`Param`, so the platform can build a form and validate REST
input from :meth:`Codec.config_schema` without knowing the codec.

Codecs work tensor by tensor on raw little-endian bytes. The model pipeline (:mod:`modelcodecs.pipeline`) owns
files, the container, hashing, de-duplication and which base tensor (if any) goes with which fine-tuned tensor;
a codec only turns one tensor (plus, optionally, its base) into chunks and back. See ``codecs/README.md`` for how
each of the four paper codecs fits this interface.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import CancelledError, ConfigError

# Safetensors dtype names -> item size in bytes. The pipeline speaks these names everywhere.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
FLOAT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"})

# progress(done, total, stage): done/total are in bytes of the fine-tuned checkpoint.
ProgressCallback = Callable[[int, int, str], None]
# cancel() -> True when the caller wants the work to stop; checked at chunk boundaries.
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None) -> None:
    """Raise :class:`CancelledError` if the caller asked to stop."""
    if cancel is not None and cancel():
        raise CancelledError("cancelled by request")


@dataclass(frozen=True)
class Param:
    """One keyword argument of a codec config, with what a form or a REST validator needs to know."""

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple | None = None

    def validate(self, value: Any) -> Any:
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is not bool and isinstance(value, bool) or not isinstance(value, self.type):
            raise ConfigError(f"{self.name}: expected {self.type.__name__}, got {type(value).__name__}")
        if self.type is float and not math.isfinite(value):
            raise ConfigError(f"{self.name}: must be a finite number")
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name}: must be >= {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ConfigError(f"{self.name}: must be <= {self.maximum}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.name}: must be one of {list(self.choices)}, got {value!r}")
        return value

    def json_schema(self) -> dict:
        kind = {int: "integer", float: "number", bool: "boolean", str: "string"}[self.type]
        schema: dict[str, Any] = {"type": kind, "default": self.default, "description": self.help}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        return schema


@dataclass(frozen=True)
class TensorSpec:
    """What the codec is told about a tensor: its name, safetensors dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES[self.dtype]


@dataclass
class EncodedChunk:
    """One independently decodable piece of an encoded tensor.

    ``coder`` names the sub-coder used (e.g. ``"fmdelta"``, ``"raw"``, ``"zstd"``) so a decoder can dispatch per
    chunk; ``meta`` is small JSON-serialisable side information stored in the container index. Chunks handed to
    a decoder may read their payload from the artifact each time ``payload`` is used (``container.StoredChunk``),
    so a decoder reads it once, in the job that decodes the chunk.
    """

    coder: str
    payload: bytes
    meta: dict = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """The payload's length, without reading it."""
        return len(self.payload)


class Codec(ABC):
    """Base class of all DeltaVault codecs.

    Subclasses set the class attributes and implement :meth:`encode_tensor` and :meth:`decode_tensor`.
    ``encode``/``decode`` (numcodecs style, one buffer without a base) come for free for codecs that need no base.
    """

    codec_id: ClassVar[str]
    # Lossless codecs restore every byte; lossy ones restore shapes and dtypes with approximate values.
    lossless: ClassVar[bool]
    # True when encoding and decoding need the base model (FM-Delta, BitDelta, xor-zstd).
    needs_base: ClassVar[bool] = False
    # True when a local prior model folder is needed (LM-GC).
    needs_prior: ClassVar[bool] = False
    # True when encoding or decoding runs a model (a forward pass, distillation): the web app sends such a job to
    # the gpu queue when a live GPU worker serves it (queue "auto").
    runs_models: ClassVar[bool] = False
    # "weights" for checkpoints, "gradients" for gradient tensors (LM-GC).
    input_kind: ClassVar[str] = "weights"
    params: ClassVar[tuple[Param, ...]] = ()
    description: ClassVar[str] = ""
    # At most how many bytes one payload byte decodes to when no base is used. Decoders refuse a tensor that claims
    # more before memory is allocated for it (a crafted index can claim any size). zstd stays below 2^15.
    max_expansion: ClassVar[int] = 1 << 16
    # True when each chunk decodes alone to the next ``meta["n"]`` elements of the tensor (given the same range of
    # the base): the pipeline then restores a large tensor a few chunks at a time, each part written and hashed
    # while it is still in the CPU's cache.
    chunks_decode_alone: ClassVar[bool] = False

    def __init__(self, **config: Any):
        known = {p.name: p for p in self.params}
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ConfigError(f"{self.codec_id}: unknown option(s) {', '.join(unknown)}")
        for param in self.params:
            value = config.get(param.name, param.default)
            setattr(self, param.name, param.validate(value))

    # -- config -------------------------------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"id": self.codec_id, **{p.name: getattr(self, p.name) for p in self.params}}

    @classmethod
    def from_config(cls, config: dict) -> Codec:
        config = dict(config)
        config.pop("id", None)
        return cls(**config)

    @classmethod
    def config_schema(cls) -> dict:
        """JSON Schema of the config, plus the codec's capabilities (for forms and API docs)."""
        return {
            "title": cls.codec_id,
            "description": cls.description,
            "type": "object",
            "additionalProperties": False,
            "properties": {p.name: p.json_schema() for p in cls.params},
            "x-lossless": cls.lossless,
            "x-needs-base": cls.needs_base,
            "x-needs-prior": cls.needs_prior,
            "x-input-kind": cls.input_kind,
            "x-runs-models": cls.runs_models,
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{p.name}={getattr(self, p.name)!r}" for p in self.params)
        return f"{type(self).__name__}({args})"

    # -- model-level hooks --------------------------------------------------------------------------------------
    def prepare(self, *, finetuned_dir: str, base_dir: str | None, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None) -> dict | None:
        """Run once per model before any tensor is encoded (BitDelta's scale distillation, LM-GC's prior
        loading); may return a JSON-serialisable report. The default does nothing.

        A codec whose :meth:`calibration_tokens` is positive also receives ``calibration_text`` (the path of a
        UTF-8 text file with at least that many tokens) and ``on_step`` (called with a dict of metrics, e.g.
        ``{"step", "loss"}``, after each training step)."""

    def calibration_tokens(self) -> int:
        """How many tokens of calibration text :meth:`prepare` consumes with this config (0: it needs none)."""
        return 0

    def exact_tensor(self, coders: Sequence[str]) -> bool:
        """Whether a tensor coded in chunks of these ``coders`` decodes to its original bytes (then its hash is
        checked). A lossy codec that codes some tensors losslessly says which."""
        return self.lossless

    def encode_report(self) -> dict:
        """What the codec wants said about the last model it encoded (lossy codecs: tensors stored raw, weight
        error); the pipeline puts it in the compress summary as ``codec_report``. The default says nothing."""
        return {}

    # -- tensor-level interface ---------------------------------------------------------------------------------
    @abstractmethod
    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        """Encode one tensor's raw bytes into chunks.

        ``base`` is given only when the base model has a tensor of the same name, dtype and shape; otherwise the
        codec must code ``data`` on its own. Chunks are yielded in order so the pipeline can write them out as
        they come; ``cancel`` is checked between chunks.
        """

    @abstractmethod
    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        """Decode ``chunks`` (as produced by :meth:`encode_tensor`) into ``out`` (writable, ``spec.nbytes``)."""

    # -- numcodecs-style buffer interface -----------------------------------------------------------------------
    def encode(self, buf: Any, *, dtype: str = "U8") -> bytes:
        """Encode one buffer without a base into a self-contained byte string."""
        from .container import pack_chunks  # local import: container depends on this module

        data = memoryview(buf).cast("B")
        spec = TensorSpec("buffer", dtype, (data.nbytes // DTYPE_SIZES[dtype],))
        return pack_chunks(spec, list(self.encode_tensor(spec, data, None)))

    def decode(self, buf: Any, out: Any = None) -> bytes | memoryview:
        from .container import unpack_chunks

        spec, chunks = unpack_chunks(bytes(buf))
        target = bytearray(spec.nbytes) if out is None else out
        view = memoryview(target).cast("B")
        if view.nbytes != spec.nbytes:
            raise ValueError("destination buffer has the wrong size")
        self.decode_tensor(spec, chunks, None, view)
        return bytes(target) if out is None else out
