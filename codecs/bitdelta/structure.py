"""Which weights of a causal LM BitDelta binarises, read from the model's structure rather than from name lists.

The model is built from its ``config.json`` on the meta device (no memory, no weights read). Binarised: the weight
of every ``nn.Linear`` and transformers ``Conv1D`` that sits inside one of the model's repeated blocks (the
children of an ``nn.ModuleList``), i.e. attention and MLP projections whatever their names (Llama's q/k/v/o and
gate/up/down, GPT-2's c_attn/c_proj/c_fc, GPT-NeoX's fused query_key_value...). Embeddings, ``lm_head`` (outside
the blocks), norms and biases are not. ``Conv1D`` stores its weight as (in, out): its output axis is 1.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._torch import check_model_dir, offline
from ..errors import ModelFormatError


@dataclass(frozen=True)
class LinearWeight:
    """One binarisable weight: its module path, the tensor's name in the checkpoint and its output axis."""

    module: str
    tensor: str
    out_axis: int  # 0 for nn.Linear (out, in); 1 for Conv1D (in, out)


def _patterns(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _selected(name: str, include: str, exclude: str) -> bool:
    inc, exc = _patterns(include), _patterns(exclude)
    if inc and not any(fnmatch.fnmatchcase(name, p) for p in inc):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in exc)


def read_config(model_dir: str | os.PathLike) -> dict:
    model_dir = check_model_dir(model_dir)
    try:
        return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{model_dir}/config.json is not valid JSON ({exc})") from None


def meta_model(model_dir: str | os.PathLike):
    """The causal LM described by ``model_dir/config.json``, built on the meta device (no weights)."""
    offline()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = check_model_dir(model_dir)
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFormatError(f"{model_dir}: config.json does not describe a transformers model ({exc})") from None
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    saved_as = set(getattr(config, "architectures", None) or [])
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if saved_as and not saved_as & causal:
        raise ModelFormatError(f"{model_dir}: not a causal language model (saved as {', '.join(sorted(saved_as))})")
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFormatError(f"{model_dir}: not a causal language model ({config.model_type}: {exc})") from None


def _checkpoint_name(module_name: str, prefix: str, names: set[str] | None) -> str:
    """The weight's name in the checkpoint: as in the module tree, or without the base-model prefix (GPT-2 style
    checkpoints saved from the bare model)."""
    full = f"{module_name}.weight"
    if names is None or full in names:
        return full
    short = full.removeprefix(f"{prefix}.") if prefix else full
    return short if short in names else full


def linear_weights(model_dir: str | os.PathLike, *, include: str = "", exclude: str = "",
                   tensor_names: set[str] | None = None) -> list[LinearWeight]:
    """The binarisable weights of the model in ``model_dir``, filtered by comma-separated ``fnmatch`` patterns on
    checkpoint tensor names (``include`` empty = all). ``tensor_names`` (the checkpoint's) resolves prefixes."""
    import torch
    from transformers.pytorch_utils import Conv1D

    model = meta_model(model_dir)
    prefix = getattr(model, "base_model_prefix", "") or ""
    blocks = [name for name, module in model.named_modules() if isinstance(module, torch.nn.ModuleList)]
    found = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            axis = 0
        elif isinstance(module, Conv1D):
            axis = 1
        else:
            continue
        if not any(name.startswith(f"{block}.") for block in blocks):
            continue
        if getattr(module, "weight", None) is None or module.weight.dim() != 2:
            continue
        tensor = _checkpoint_name(name, prefix, tensor_names)
        if _selected(tensor, include, exclude):
            found.append(LinearWeight(name, tensor, axis))
    return found
