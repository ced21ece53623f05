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
from .bitdelta import BitDeltaCodec
from .fmdelta import FMDeltaCodec, FMDeltaNoBaseCodec
from .hyper import HyperCodec
from .lmgc import LMGCCodec
from .registry import get_codec, get_codec_class, list_codecs, register_codec
from .rtn import RTNCodec

register_codec(FMDeltaCodec)
register_codec(FMDeltaNoBaseCodec)
register_codec(ZstdCodec)
register_codec(XorZstdCodec)
register_codec(BitDeltaCodec)
register_codec(HyperCodec)
register_codec(RTNCodec)
register_codec(LMGCCodec)

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
