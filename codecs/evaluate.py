"""Quality of a model folder on a dataset: used by evaluate jobs, the CLI and the benchmarks alike.

Each evaluator takes a model folder and a dataset file, and optionally ``progress(done, total, stage)`` and
``cancel()``, and returns a JSON-serialisable dict of metrics. torch and transformers are imported when an evaluator
runs, never at import time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ._torch import load_model, load_tokenizer
from .abc import CancelCheck, ProgressCallback, check_cancel
from .errors import ConfigError, ModelFormatError


def _positive_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")


def read_tokens(tokenizer, text_path: str | os.PathLike, max_tokens: int) -> list[int]:
    """The first ``max_tokens`` token ids of the UTF-8 text file (read in a bounded prefix: tokens rarely exceed
    32 bytes each), without special tokens."""
    with open(text_path, encoding="utf-8", errors="replace") as fh:
        text = fh.read(max_tokens * 32)
    return tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]


def count_tokens(model_dir: str | os.PathLike, text_path: str | os.PathLike, limit: int) -> int:
    """How many tokens of ``model_dir``'s tokenizer the text file holds, counted up to ``limit``."""
    text_path = Path(text_path)
    if not text_path.is_file():
        raise ModelFormatError(f"text file {text_path} does not exist")
    return len(read_tokens(load_tokenizer(model_dir), text_path, limit))


def evaluate_perplexity(model_dir: str | os.PathLike, text_path: str | os.PathLike, *, max_tokens: int = 1 << 16,
                        window: int = 512, batch_size: int = 4, device: str = "auto",
                        progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> dict:
    """Perplexity of the causal LM folder ``model_dir`` on the UTF-8 text file ``text_path``.

    The text (at most ``max_tokens`` tokens, read in a bounded prefix) is tokenised once, cut into fixed
    non-overlapping windows of ``window`` tokens (at most the model's context), and scored: perplexity =
    exp(sum of next-token NLL / number of predicted tokens), i.e. the token-weighted mean over windows; each window
    predicts all its tokens but the first. ``device``: ``auto`` means CUDA when torch sees one. ``progress``
    reports tokens; ``cancel()`` is polled between batches. Returns ``{"perplexity", "nll", "tokens", "windows",
    "window", "device", "dtype"}``.
    """
    _positive_int("max_tokens", max_tokens, 2)
    _positive_int("window", window, 2)
    text_path = Path(text_path)
    if not text_path.is_file():
        raise ModelFormatError(f"text file {text_path} does not exist")
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, device=device)
    import torch

    device = str(next(model.parameters()).device)
    context = getattr(model.config, "max_position_embeddings", None) or window
    window = min(window, int(context))

    ids = read_tokens(tokenizer, text_path, max_tokens)
    if len(ids) < 2:
        raise ModelFormatError(f"{text_path}: fewer than 2 tokens of text")
    windows = [ids[i:i + window] for i in range(0, len(ids), window)]
    if len(windows) > 1 and len(windows[-1]) < 2:
        windows.pop()
    total_tokens = sum(len(w) - 1 for w in windows)

    nll_sum = 0.0
    counted = 0
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            check_cancel(cancel)
            group = windows[i:i + batch_size]
            width = max(len(w) for w in group)
            x = torch.zeros((len(group), width), dtype=torch.long)
            mask = torch.zeros((len(group), width), dtype=torch.long)
            for row, w in enumerate(group):
                x[row, :len(w)] = torch.tensor(w)
                mask[row, :len(w)] = 1
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x, attention_mask=mask).logits[:, :-1].float()
            target = x[:, 1:]
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                    reduction="none").view(target.shape)
            valid = mask[:, 1:].bool()
            nll_sum += float(nll[valid].double().sum())
            counted += int(valid.sum())
            if progress is not None:
                progress(counted, total_tokens, "evaluating perplexity")
    mean = nll_sum / counted
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": counted, "windows": len(windows),
            "window": window, "device": device, "dtype": str(next(model.parameters()).dtype)}


__all__ = ["count_tokens", "evaluate_perplexity", "read_tokens"]
