"""Fine-tune a causal LM folder on a text file (full fine-tuning, AdamW): makes the real demo and benchmark pairs.

Used by the ``deltavault_bitdelta_demo`` management command and ``modelcodecs bench --bitdelta``: a real pretrained
base (e.g. :func:`modelcodecs.packaged.smollm2_folder`) fine-tuned on real text (e.g.
:func:`modelcodecs.packaged.python_docs_corpus`'s training half).
"""

from __future__ import annotations

import json
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
    long it took, also written beside the folder (``<out_dir>.json``, outside it: the folder holds only the
    model). A folder made earlier with the same settings is reused (its record returned, ``reused`` True); one
    made with other settings is refused rather than silently taken for this fine-tune."""
    out_dir = Path(out_dir)
    settings = {"steps": steps, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "seed": seed, "dtype": dtype}
    record_path = out_dir.with_name(out_dir.name + ".json")
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {}
        if record.get("settings") != settings:
            raise ConfigError(f"{out_dir} holds a fine-tune made with other settings ({record.get('settings')}, "
                              f"asked for {settings}): remove it or choose another folder")
        return {**record, "reused": True, "out_dir": str(out_dir)}
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
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ModelFormatError(f"fine-tuning diverged at step {step + 1}: loss {value}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(value)
        if progress is not None:
            progress(step + 1, steps, "fine-tuning")
    seconds = time.perf_counter() - started
    model.eval()
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to({"F32": torch.float32, "BF16": torch.bfloat16}[dtype]).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out_dir)
    record = {"reused": False, "out_dir": str(out_dir), "settings": settings,
              "tokens_seen": steps * batch_size * seq_len, "text_tokens": len(ids),
              "first_loss": losses[0], "last_loss": losses[-1], "seconds": round(seconds, 1),
              "seconds_per_step": round(seconds / steps, 3), "device": device}
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


# The real demo and benchmark fine-tune: 6,144 tokens of the training topics, each seen once, in batches of 512
# tokens (10 steps of 2 x 32 tokens at lr 3e-4 scored worse than the base on the held-out topics). Short because a
# step took 45-100 s on the shared, loaded development machine.
PYDOCS_FINETUNE = {"steps": 12, "batch_size": 4, "seq_len": 128, "lr": 1e-4}


def pydocs_pair(root: str | os.PathLike, *, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, **settings) -> dict:
    """The real BitDelta pair under ``root``, written once and reused: SmolLM2-135M-Instruct in fp32
    (:func:`~modelcodecs.packaged.smollm2_folder`) as the base, fine-tuned by :func:`finetune_causal_lm` with
    :data:`PYDOCS_FINETUNE` (overridden by ``settings``) on the training topics of
    :func:`~modelcodecs.packaged.python_docs_corpus`; its held-out topics score the perplexity. Returns the paths
    (``base``, ``finetuned``, ``train``, ``heldout``) and the fine-tune's record (``finetune``)."""
    from . import packaged

    root = Path(root)
    train, heldout = packaged.python_docs_corpus(root / "text")
    base = packaged.smollm2_folder(root / "base")
    finetuned = root / "finetuned"
    record = finetune_causal_lm(base, train, finetuned, progress=progress, cancel=cancel,
                                **{**PYDOCS_FINETUNE, **settings})
    return {"base": base, "finetuned": finetuned, "train": train, "heldout": heldout, "finetune": record}


def main(argv: list[str] | None = None) -> None:
    """``python -m modelcodecs.finetune ROOT``: make (or reuse) the pydocs pair; print its four paths (base,
    fine-tune, training text, held-out text), the arguments of ``modelcodecs bench --bitdelta``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m modelcodecs.finetune", description=main.__doc__)
    parser.add_argument("root")
    for name, value in PYDOCS_FINETUNE.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    root = args.pop("root")
    started = time.perf_counter()

    def progress(done: int, total: int, stage: str) -> None:
        print(f"{stage} {done}/{total} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    pair = pydocs_pair(root, progress=progress, **args)
    print(json.dumps(pair["finetune"]), file=sys.stderr)
    print(" ".join(str(pair[key]) for key in ("base", "finetuned", "train", "heldout")))


if __name__ == "__main__":
    main()

__all__ = ["PYDOCS_FINETUNE", "finetune_causal_lm", "pydocs_pair"]
