"""Fine-tune a causal LM folder on a text file (full fine-tuning, AdamW): makes the real demo and benchmark pairs.

Used by the ``deltavault_bitdelta_demo`` management command and ``modelcodecs bench --bitdelta``: a real pretrained
base (e.g. :func:`modelcodecs.packaged.smollm2_folder`) fine-tuned on real text (e.g.
:func:`modelcodecs.packaged.python_docs_corpus`'s training half).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

from ._torch import load_model, load_tokenizer, resolve_device
from .abc import CancelCheck, ProgressCallback, check_cancel
from .errors import ConfigError, ModelFormatError
from .evaluate import read_tokens


def finetune_causal_lm(base_dir: str | os.PathLike, text_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                       steps: int = 200, batch_size: int = 4, seq_len: int = 128, lr: float = 1e-4,
                       seed: int = 0, device: str = "cpu", dtype: str = "F32",
                       progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> dict:
    """Train every parameter of ``base_dir``'s model for ``steps`` AdamW steps (cosine schedule) on consecutive
    windows of ``text_path`` (cycled when the text is shorter than steps x batch x seq_len); save the result with
    its tokenizer in ``out_dir`` (written under a temporary name, in ``dtype``). Returns what was done and how
    long it took. An existing ``out_dir`` with a config and weights is reused."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return {"reused": True, "out_dir": str(out_dir)}
    for name, value in (("steps", steps), ("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive int, got {value!r}")
    if dtype not in ("F32", "BF16"):
        raise ConfigError(f"dtype must be 'F32' or 'BF16', got {dtype!r}")
    import torch

    started = time.perf_counter()
    tokenizer = load_tokenizer(base_dir)
    ids = read_tokens(tokenizer, text_path, steps * batch_size * seq_len)
    windows = len(ids) // seq_len
    if windows < batch_size:
        raise ModelFormatError(f"{text_path}: {len(ids)} tokens, fewer than one batch of {batch_size} x {seq_len}")
    data = torch.tensor(ids[:windows * seq_len], dtype=torch.long).view(windows, seq_len)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = resolve_device(device)
    model = load_model(base_dir, device=device, dtype=torch.float32).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    order = torch.randperm(windows, generator=generator)
    position, losses = 0, []
    for step in range(steps):
        check_cancel(cancel)
        if position + batch_size > windows:
            order, position = torch.randperm(windows, generator=generator), 0
        batch = data[order[position:position + batch_size]].to(device)
        position += batch_size
        loss = model(input_ids=batch, labels=batch).loss
        if not math.isfinite(float(loss)):
            raise ModelFormatError(f"fine-tuning diverged at step {step + 1}: loss {float(loss)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        if progress is not None:
            progress(step + 1, steps, "fine-tuning")
    seconds = time.perf_counter() - started
    model.eval()
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to({"F32": torch.float32, "BF16": torch.bfloat16}[dtype]).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    return {"reused": False, "out_dir": str(out_dir), "steps": steps, "batch_size": batch_size, "seq_len": seq_len,
            "lr": lr, "tokens_seen": steps * batch_size * seq_len, "text_tokens": len(ids),
            "first_loss": losses[0], "last_loss": losses[-1], "seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / steps, 3), "device": device}


__all__ = ["finetune_causal_lm"]
