"""The one way codecs and evaluators that run models choose a device and load a model folder.

Importing this module does not import torch; each function does, when called. Nothing here touches the network:
model hubs are switched off before transformers is imported.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, ModelFormatError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def offline() -> None:
    """Forbid hub downloads: every model is a local folder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@contextmanager
def no_hf_progress_bars():
    """transformers' own progress bars ("Loading weights") off: they would break a CLI's one-line output and fill
    worker logs; callers report progress their own way."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None): CUDA when torch sees one, else CPU. ``cuda`` / ``cuda:N`` without a GPU is an error."""
    import torch

    device = device or "auto"
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for, but torch sees no CUDA device")
        return device
    raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)} (or cuda:N), got {device!r}")


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelFormatError(f"{model_dir} is not a model folder (no config.json)")
    return model_dir


def load_tokenizer(model_dir: str | os.PathLike):
    offline()
    from transformers import AutoTokenizer

    model_dir = check_model_dir(model_dir)
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFormatError(f"{model_dir}: no usable tokenizer ({exc})") from None


def load_model(model_dir: str | os.PathLike, *, auto_class: str = "AutoModelForCausalLM", device: str = "auto",
               dtype: str = "auto", require_all_weights: bool = False):
    """Load a transformers model folder (safetensors or ``weights_only`` .bin: nothing is unpickled) on
    ``device``, in evaluation mode. ``auto_class`` names the transformers Auto class (the model's head).
    ``require_all_weights``: refuse a folder that lacks weights the class needs (transformers would initialise
    them randomly, e.g. a classification head on a causal LM)."""
    offline()
    import transformers

    model_dir = check_model_dir(model_dir)
    device = resolve_device(device)
    loader = getattr(transformers, auto_class)
    try:
        with no_hf_progress_bars():
            model, info = loader.from_pretrained(model_dir, dtype=dtype, low_cpu_mem_usage=True,
                                                 output_loading_info=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{model_dir}: cannot load it as {auto_class.removeprefix('AutoModelFor')} "
                               f"({exc})") from None
    missing = sorted(info.get("missing_keys") or [])
    if require_all_weights and missing:
        raise ModelFormatError(f"{model_dir}: has no weights for {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''}: loading it as "
                               f"{auto_class.removeprefix('AutoModelFor')} would initialise them randomly")
    return model.to(device).eval()
