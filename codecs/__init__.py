"""modelcodecs: compress fine-tuned models against their base, tensor by tensor.

Importing this package never imports Django, and never imports torch unless a codec that runs models is used.
"""

from .abc import Codec, EncodedChunk, Param, TensorSpec
from .baselines import XorZstdCodec, ZstdCodec
from .errors import (
    CancelledError,
    ConfigError,
    CorruptArtifactError,
    ModelCodecError,
    ModelFormatError,
    UnknownCodecError,
    UnsafePathError,
    UnsupportedDtypeError,
    VerificationError,
    WrongBaseError,
    WrongPriorError,
)
from .fmdelta import FMDeltaCodec, FMDeltaNoBaseCodec
from .registry import get_codec, get_codec_class, list_codecs, register_codec, register_deferred

register_codec(FMDeltaCodec)
register_codec(FMDeltaNoBaseCodec)
register_codec(ZstdCodec)
register_codec(XorZstdCodec)
# these need numpy (and torch or a prior): imported when first used, so that a command starts without them
_DEFERRED = {"BitDeltaCodec": ("bitdelta", "bitdelta"), "HyperCodec": ("hyper", "hyper"), "RTNCodec": ("rtn", "rtn"),
             "LMGCCodec": ("lmgc", "lmgc")}
for _name, (_codec_id, _module) in _DEFERRED.items():
    register_deferred(_codec_id, f"{__name__}.{_module}:{_name}")


def __getattr__(name: str):
    if name in _DEFERRED:
        return get_codec_class(_DEFERRED[name][0])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from .hfio import compare_models, read_model_info  # noqa: E402
from .pipeline import compress_model, decode_tensor, decompress_model, inspect_artifact, verify_artifact  # noqa: E402
from .pipeline import compress_models, decompress_models  # noqa: E402

__all__ = [
    "BitDeltaCodec", "CancelledError", "Codec", "ConfigError", "CorruptArtifactError", "EncodedChunk", "FMDeltaCodec", "ModelCodecError",
    "ModelFormatError", "Param", "TensorSpec", "UnknownCodecError", "UnsafePathError", "UnsupportedDtypeError",
    "VerificationError", "WrongBaseError", "WrongPriorError", "LMGCCodec", "compare_models", "compress_model",
    "decode_tensor", "decompress_model", "compress_models", "decompress_models", "get_codec",
    "get_codec_class", "inspect_artifact", "list_codecs", "read_model_info", "register_codec", "verify_artifact",
]
