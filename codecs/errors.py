"""Errors raised by modelcodecs.

Every error is a ``ValueError``, ``TypeError`` or ``RuntimeError`` subclass, so callers that do not know this
package can still catch them sensibly; callers that do (the CLI, the web app) catch ``ModelCodecError``.
"""


class ModelCodecError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ModelCodecError, ValueError):
    """A codec config is invalid: an unknown key, a wrong type or a value out of range."""


class UnknownCodecError(ConfigError):
    """No codec is registered under the requested id."""

    def __init__(self, codec_id: str):
        self.codec_id = codec_id
        super().__init__(f"unknown codec id {codec_id!r}")


class UnsupportedDtypeError(ModelCodecError, TypeError):
    """A tensor has a dtype the codec or the reader cannot handle."""


class ModelFormatError(ModelCodecError, ValueError):
    """A model folder or file is malformed (bad safetensors header, foreign pickle, missing shard...)."""


class UnsafePathError(ModelCodecError, ValueError):
    """A path escapes the folder it must stay inside."""


class CorruptArtifactError(ModelCodecError, ValueError):
    """A compressed artifact is truncated, corrupted or not an artifact at all."""


class WrongBaseError(ModelCodecError, ValueError):
    """The base given for decoding is not the base the artifact was made against."""


class VerificationError(ModelCodecError, ValueError):
    """Restored bytes do not hash to what was recorded at compression time."""


class CancelledError(ModelCodecError, RuntimeError):
    """The caller asked to stop; nothing partial was left behind."""


class WrongPriorError(WrongBaseError):
    """The prior given for decoding (LM-GC) is not the prior the artifact was coded with."""
