"""Quality of a model folder on a dataset: used by evaluate jobs, the CLI and the benchmarks alike.

Each evaluator takes a model folder and a dataset file, and optionally ``progress(done, total, stage)`` and
``cancel()``, and returns a JSON-serialisable dict of metrics. torch and transformers are imported when an evaluator
runs, never at import time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import csv
import json
from collections.abc import Callable

from ._torch import load_model, load_tokenizer
from .abc import CancelCheck, ProgressCallback, check_cancel
from .errors import ConfigError, ModelFormatError

# partial(metrics): the running scores after each batch, for live display
PartialCallback = Callable[[dict], None]


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
                        progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                        partial: PartialCallback | None = None) -> dict:
    """Perplexity and next-token top-1 accuracy of the causal LM folder ``model_dir`` on the UTF-8 text file ``text_path``.

    The text (at most ``max_tokens`` tokens, read in a bounded prefix) is tokenised once, cut into fixed
    non-overlapping windows of ``window`` tokens (at most the model's context), and scored: perplexity =
    exp(sum of next-token NLL / number of predicted tokens), i.e. the token-weighted mean over windows; each window
    predicts all its tokens but the first. ``device``: ``auto`` means CUDA when torch sees one. ``progress``
    reports tokens; ``cancel()`` is polled between batches; ``partial`` gets the running perplexity and accuracy
    after each batch. ``top1_accuracy`` is the fraction of predicted tokens whose most likely next token (argmax
    of the logits) is the actual one. Returns ``{"perplexity", "top1_accuracy", "nll", "tokens", "windows",
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
    correct = 0
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
            correct += int((logits.argmax(dim=-1) == target)[valid].sum())
            if progress is not None:
                progress(counted, total_tokens, "evaluating perplexity")
            if partial is not None:
                partial({"perplexity": math.exp(nll_sum / counted), "top1_accuracy": correct / counted,
                         "tokens": counted, "of_tokens": total_tokens})
    mean = nll_sum / counted
    return {"perplexity": math.exp(mean), "top1_accuracy": correct / counted, "nll": mean, "tokens": counted,
            "windows": len(windows),
            "window": window, "device": device, "dtype": str(next(model.parameters()).dtype)}


# -- labelled datasets and sequence classification ------------------------------------------------------------------

LABELLED_FORMATS = ("csv", "jsonl")
MAX_LABELS = 1000


def labelled_format(path: str | os.PathLike) -> str:
    """``csv`` or ``jsonl``, from the file name."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix == "json":
        suffix = "jsonl"
    if suffix not in LABELLED_FORMATS:
        raise ModelFormatError(f"{Path(path).name}: a labelled dataset is a .csv or .jsonl file")
    return suffix


def read_labelled(path: str | os.PathLike, *, text_field: str = "text", label_field: str = "label",
                  limit: int | None = None) -> list[tuple[str, str]]:
    """The (text, label) rows of a labelled CSV (with a header row) or JSONL file (one object a line); labels as
    strings. Any problem raises :class:`ModelFormatError` naming the file's line."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"labelled dataset {path} does not exist")
    kind = labelled_format(path)
    rows: list[tuple[str, str]] = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            if kind == "csv":
                reader = csv.DictReader(fh)
                missing = [f for f in (text_field, label_field) if f not in (reader.fieldnames or [])]
                if missing:
                    raise ModelFormatError(f"{path.name}: line 1: the header has no {' or '.join(map(repr, missing))} "
                                           f"column (columns: {reader.fieldnames or []})")
                records = ((reader.line_num, row) for row in reader)
            else:
                records = ((number, _json_line(line, number, path.name)) for number, line in enumerate(fh, 1)
                           if line.strip())
            for number, row in records:
                text, label = row.get(text_field), row.get(label_field)
                if label_field not in row or label is None or str(label).strip() == "":
                    raise ModelFormatError(f"{path.name}: line {number}: no {label_field!r} value")
                if not isinstance(text, str) or not text.strip():
                    raise ModelFormatError(f"{path.name}: line {number}: no {text_field!r} text")
                if isinstance(label, (dict, list, float)) or isinstance(label, bool):
                    raise ModelFormatError(f"{path.name}: line {number}: label {label!r} is not a string or an int")
                rows.append((text, str(label).strip()))
                if limit is not None and len(rows) >= limit:
                    break
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path.name}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ModelFormatError(f"{path.name}: not valid CSV ({exc})") from None
    if not rows:
        raise ModelFormatError(f"{path.name}: no labelled rows")
    return rows


def _json_line(line: str, number: int, name: str) -> dict:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ModelFormatError(f"{name}: line {number}: not a JSON object ({exc})") from None
    if not isinstance(row, dict):
        raise ModelFormatError(f"{name}: line {number}: not a JSON object")
    return row


def labelled_dataset_info(path: str | os.PathLike) -> dict:
    """What registration records about a labelled dataset: format, row count, label counts."""
    rows = read_labelled(path)
    counts: dict[str, int] = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    if len(counts) > MAX_LABELS:
        raise ModelFormatError(f"{Path(path).name}: {len(counts)} distinct labels (at most {MAX_LABELS})")
    return {"format": labelled_format(path), "rows": len(rows), "labels": dict(sorted(counts.items()))}


def classifier_labels(model_dir: str | os.PathLike) -> list[str]:
    """The label names of a sequence-classification model folder, by class id. A folder whose config does not
    declare a ``*ForSequenceClassification`` architecture has no trained head: loading it as a classifier would
    make transformers create a random one, so it is refused here."""
    config_path = Path(model_dir) / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{model_dir}: no readable config.json ({exc})") from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise ModelFormatError(f"{Path(model_dir).name}: not a sequence-classification model (architectures "
                               f"{architectures}): it has no trained classification head")
    id2label = config.get("id2label") or {}
    try:
        labels = [str(id2label[str(i)]) for i in range(len(id2label))]
    except KeyError:
        raise ModelFormatError(f"{Path(model_dir).name}: config.json id2label is not numbered 0..n-1") from None
    if len(labels) < 2:
        raise ModelFormatError(f"{Path(model_dir).name}: a classifier needs at least 2 labels in id2label")
    return labels


def label_ids(rows: list[tuple[str, str]], labels: list[str], name: str = "dataset") -> list[int]:
    """Each row's class id: its label is a label name of the model, or a class id. An unknown label raises
    :class:`ModelFormatError` naming the (1-based) row."""
    by_name = {label: i for i, label in enumerate(labels)}
    out = []
    for number, (_, label) in enumerate(rows, 1):
        if label in by_name:
            out.append(by_name[label])
        elif label.isdigit() and int(label) < len(labels):
            out.append(int(label))
        else:
            raise ModelFormatError(f"{name}: row {number}: label {label!r} is not one of the model's labels "
                                   f"{labels}")
    return out


def classification_scores(predicted: list[int], actual: list[int], classes: int) -> dict:
    """Accuracy and macro-F1 (F1 per class present in either list, averaged; a class with no true or
    predicted positive is left out)."""
    total = len(actual)
    correct = sum(p == a for p, a in zip(predicted, actual))
    f1s = []
    for c in range(classes):
        tp = sum(p == c and a == c for p, a in zip(predicted, actual))
        fp = sum(p == c and a != c for p, a in zip(predicted, actual))
        fn = sum(p != c and a == c for p, a in zip(predicted, actual))
        if tp + fp + fn:
            f1s.append(2 * tp / (2 * tp + fp + fn))
    return {"accuracy": correct / total if total else 0.0, "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0}


def evaluate_classification(model_dir: str | os.PathLike, data_path: str | os.PathLike, *,
                            max_examples: int = 2000, batch_size: int = 16, max_length: int = 256,
                            device: str = "auto", progress: ProgressCallback | None = None,
                            cancel: CancelCheck | None = None, partial: PartialCallback | None = None) -> dict:
    """Accuracy and macro-F1 of the sequence-classification folder ``model_dir`` on a labelled CSV/JSONL file
    (the first ``max_examples`` rows; texts truncated to ``max_length`` tokens). Refuses a folder without a
    trained head (see :func:`classifier_labels`; a head that loading would initialise randomly is refused too).
    ``progress`` counts examples; ``partial`` gets the running scores after each batch. Returns ``{"accuracy",
    "macro_f1", "examples", "labels", "device"}``."""
    _positive_int("max_examples", max_examples, 1)
    _positive_int("batch_size", batch_size, 1)
    _positive_int("max_length", max_length, 2)
    labels = classifier_labels(model_dir)
    rows = read_labelled(data_path, limit=max_examples)
    actual = label_ids(rows, labels, Path(data_path).name)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir, auto_class="AutoModelForSequenceClassification", device=device,
                       require_all_weights=True)
    import torch

    device = str(next(model.parameters()).device)
    predicted: list[int] = []
    with torch.inference_mode():
        for i in range(0, len(rows), batch_size):
            check_cancel(cancel)
            batch = tokenizer([text for text, _ in rows[i:i + batch_size]], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            predicted.extend(int(c) for c in model(**batch).logits.argmax(dim=-1))
            if progress is not None:
                progress(len(predicted), len(rows), "evaluating accuracy")
            if partial is not None:
                partial({**classification_scores(predicted, actual[:len(predicted)], len(labels)),
                         "examples": len(predicted), "of_examples": len(rows)})
    return {**classification_scores(predicted, actual, len(labels)), "examples": len(rows), "labels": labels,
            "device": device}


__all__ = ["LABELLED_FORMATS", "classification_scores", "classifier_labels", "count_tokens",
           "evaluate_classification", "evaluate_perplexity", "label_ids", "labelled_dataset_info", "labelled_format",
           "read_labelled", "read_tokens"]
