"""Real training runs that record real gradient sets (for the demo, the benchmarks and the registry).

* :func:`train_digits_cnn` -- a small CNN on scikit-learn's handwritten digits (1,797 8x8 images that ship inside
  scikit-learn: ``sklearn.datasets.load_digits``), cross-entropy, SGD with momentum.
* :func:`train_text_transformer` -- a small causal transformer (Llama architecture from a config, byte vocabulary)
  on real English text: CPython's pydoc topics (:func:`modelcodecs.packaged.python_docs_corpus`), AdamW.

Both record gradients with :class:`modelcodecs.gradients.GradientRecorder` and return a summary with the final
loss (so a reader can see the network learned) and the recorder's cost.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .gradients import GradientRecorder

DIGITS_SOURCE = "scikit-learn's handwritten digits (sklearn.datasets.load_digits, 1,797 8x8 images)"


def _summary(recorder: GradientRecorder, losses: list[float], seconds: float, source: str, model) -> dict:
    return {"source": source, "parameters": sum(p.numel() for p in model.parameters()),
            "first_loss": round(losses[0], 4), "last_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
            "steps": len(losses), "train_seconds": round(seconds, 2), "recorder": recorder.cost.as_dict()}


def train_digits_cnn(out_dir: str | os.PathLike, *, steps: int = 200, every: int = 20, seed: int = 0,
                     device: str = "cpu") -> dict:
    import torch
    from sklearn.datasets import load_digits

    from ._torch import resolve_device

    device = resolve_device(device)
    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1).to(device)
    y = torch.tensor(digits.target, dtype=torch.long).to(device)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 4 * 4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    ).to(device)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    recorder = GradientRecorder(model, out_dir, every=every)
    generator = torch.Generator().manual_seed(seed)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        batch = torch.randint(0, len(y), (64,), generator=generator).to(device)
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        recorder.record(step)
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    return _summary(recorder, losses, time.perf_counter() - started, DIGITS_SOURCE, model)


def train_text_transformer(out_dir: str | os.PathLike, *, steps: int = 100, every: int = 10, seed: int = 0,
                           hidden: int = 128, layers: int = 2, context: int = 128, device: str = "cpu") -> dict:
    import tempfile

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ._torch import resolve_device
    from .packaged import PYTHON_DOCS_SOURCE, python_docs_corpus

    device = resolve_device(device)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        train_file, _ = python_docs_corpus(tmp)
        data = torch.tensor(list(Path(train_file).read_bytes()), dtype=torch.long)
    config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=hidden * 4 // 2 * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=context, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    recorder = GradientRecorder(model, out_dir, every=every)
    generator = torch.Generator().manual_seed(seed)
    losses, started = [], time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, len(data) - context - 1, (16,), generator=generator)
        batch = torch.stack([data[s:s + context] for s in starts]).to(device)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        recorder.record(step)
        optimiser.step()
        optimiser.zero_grad()
        losses.append(loss.item())
    return _summary(recorder, losses, time.perf_counter() - started, f"byte-level Llama on {PYTHON_DOCS_SOURCE}",
                    model)
