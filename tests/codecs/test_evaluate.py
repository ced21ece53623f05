"""The evaluators of modelcodecs.evaluate, checked against values computed by hand on a tiny model."""

from __future__ import annotations

import json
import math

import pytest

from modelcodecs import synthetic
from modelcodecs.errors import CancelledError, ModelFormatError
from modelcodecs.evaluate import (classification_scores, classifier_labels, evaluate_classification,
                                  evaluate_perplexity, label_ids, labelled_dataset_info, read_labelled)


@pytest.mark.slow
def test_tiny_pair_fine_tune_fits_its_corpus_better(tiny):
    base = evaluate_perplexity(tiny.base, tiny.dataset)
    ft = evaluate_perplexity(tiny.finetuned, tiny.dataset)
    assert math.isfinite(base["perplexity"]) and math.isfinite(ft["perplexity"])
    assert ft["perplexity"] < base["perplexity"]
    assert ft["tokens"] == base["tokens"] > 100


@pytest.mark.slow
def test_perplexity_is_the_token_weighted_mean_nll_and_batching_does_not_change_it(tiny, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = tmp_path / "t.txt"
    text.write_text(" ".join(synthetic.generate_lines(40, seed=9, domain="chat")))
    tok = AutoTokenizer.from_pretrained(tiny.finetuned)
    model = AutoModelForCausalLM.from_pretrained(tiny.finetuned).eval()
    ids = tok(text.read_text(), add_special_tokens=False)["input_ids"][:200]
    window = 48
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ids), window):
            w = torch.tensor([ids[i:i + window]])
            if w.shape[1] < 2:
                continue
            loss = model(input_ids=w, labels=w).loss.item()
            total += loss * (w.shape[1] - 1)
            count += w.shape[1] - 1
    seen, partial = [], []
    one = evaluate_perplexity(tiny.finetuned, text, max_tokens=200, window=window, batch_size=1,
                              progress=lambda d, t, s: seen.append((d, t)), partial=partial.append)
    many = evaluate_perplexity(tiny.finetuned, text, max_tokens=200, window=window, batch_size=3)
    assert one["tokens"] == many["tokens"] == count
    assert one["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert many["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)
    assert seen[-1] == (count, count) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))
    assert len(partial) == len(seen) and partial[-1]["perplexity"] == pytest.approx(one["perplexity"])


@pytest.mark.slow
def test_top1_accuracy_is_the_share_of_tokens_whose_argmax_is_the_next_token(tiny):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.finetuned)
    model = AutoModelForCausalLM.from_pretrained(tiny.finetuned).eval()
    ids = tok(tiny.dataset.read_text(), add_special_tokens=False)["input_ids"][:150]
    hits = total = 0
    with torch.no_grad():
        for i in range(0, len(ids), 50):
            w = ids[i:i + 50]
            predicted = model(input_ids=torch.tensor([w])).logits[0, :-1].argmax(-1).tolist()
            hits += sum(p == t for p, t in zip(predicted, w[1:]))
            total += len(w) - 1
    result = evaluate_perplexity(tiny.finetuned, tiny.dataset, max_tokens=150, window=50, batch_size=2)
    assert result["tokens"] == total and result["top1_accuracy"] == pytest.approx(hits / total)
    assert 0 < hits < total


def _classifier(tiny, folder):
    """A tiny Llama sequence classifier (3 labels) sharing the tiny pair's tokenizer; its head is in the weights."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny.finetuned)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    config = LlamaConfig.from_pretrained(tiny.finetuned, num_labels=3, id2label={0: "neg", 1: "neu", 2: "pos"},
                                         label2id={"neg": 0, "neu": 1, "pos": 2})
    config.pad_token_id = tok.pad_token_id
    torch.manual_seed(3)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(50)  # spread the logits so that the classes differ between texts
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_classification_accuracy_and_macro_f1_match_hand_computed_values(tiny, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = _classifier(tiny, tmp_path / "clf")
    texts = synthetic.generate_lines(24, seed=5, domain="chat")
    labels = ["neg", "neu", "pos", "1"] * 6  # names, and a class id
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": t, "label": lab}) for t, lab in zip(texts, labels)) + "\n")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():  # one text at a time: no padding at all
        predicted = [int(model(**tok(t, return_tensors="pt")).logits.argmax(-1)) for t in texts]
    actual = [{"neg": 0, "neu": 1, "pos": 2, "1": 1}[lab] for lab in labels]
    f1 = []
    for c in range(3):
        tp = sum(p == a == c for p, a in zip(predicted, actual))
        fp = sum(p == c != a for p, a in zip(predicted, actual))
        fn = sum(a == c != p for p, a in zip(predicted, actual))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    partial = []
    result = evaluate_classification(folder, data, batch_size=5, partial=partial.append)
    assert result["examples"] == 24 and result["labels"] == ["neg", "neu", "pos"]
    assert result["accuracy"] == pytest.approx(sum(p == a for p, a in zip(predicted, actual)) / 24)
    assert result["macro_f1"] == pytest.approx(sum(f1) / len(f1))
    assert len(set(predicted)) > 1  # the check means something
    assert [p["examples"] for p in partial] == [5, 10, 15, 20, 24]


def test_classification_scores_by_hand():
    # classes 0,1,2: tp/fp/fn = 0: 1/1/0 -> 2/3; 1: 1/0/1 -> 2/3; 2: 0/0/0 -> left out
    assert classification_scores([0, 0, 1], [0, 1, 1], 3) == {"accuracy": 2 / 3, "macro_f1": pytest.approx(2 / 3)}


@pytest.mark.slow
def test_a_model_without_a_trained_head_is_refused(tiny, tmp_path):
    with pytest.raises(ModelFormatError, match="no trained classification head"):
        classifier_labels(tiny.finetuned)
    # a causal LM whose config claims a classifier: transformers would create a random head; refused
    import shutil

    fake = tmp_path / "fake"
    shutil.copytree(tiny.finetuned, fake)
    config = json.loads((fake / "config.json").read_text())
    config.update(architectures=["LlamaForSequenceClassification"], id2label={"0": "a", "1": "b"},
                  label2id={"a": 0, "b": 1})
    (fake / "config.json").write_text(json.dumps(config))
    data = tmp_path / "d.csv"
    data.write_text("text,label\nhello there,a\nbye now,b\n")
    with pytest.raises(ModelFormatError, match="initialise them randomly"):
        evaluate_classification(fake, data)


@pytest.mark.parametrize("name, content, message", [
    ("a.csv", "text,label\nfine,pos\n,neg\n", "line 3: no 'text' text"),
    ("b.csv", "text,sentiment\nfine,pos\n", "line 1: the header has no 'label' column"),
    ("c.csv", "text,label\nfine,pos\nalso fine,\n", "line 3: no 'label' value"),
    ("d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"\n', "line 2: not a JSON object"),
    ("e.jsonl", '{"text": "a", "label": "x"}\n\n{"text": "b", "label": [1]}\n', "line 3: label"),
    ("f.jsonl", '["a", "x"]\n', "line 1: not a JSON object"),
    ("g.txt", "text,label\n", "a .csv or .jsonl file"),
    ("h.csv", "text,label\n", "no labelled rows"),
])
def test_labelled_dataset_errors_name_the_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ModelFormatError, match=message):
        read_labelled(path)


def test_labelled_dataset_info_and_unknown_labels(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,label\n"a, quoted text",pos\nplain,neg\nmore,pos\n')
    assert labelled_dataset_info(path) == {"format": "csv", "rows": 3, "labels": {"neg": 1, "pos": 2}}
    rows = read_labelled(path)
    assert label_ids(rows, ["neg", "pos"]) == [1, 0, 1]
    with pytest.raises(ModelFormatError, match="row 2: label 'neg' is not one of the model's labels"):
        label_ids(rows, ["pos", "other"])


@pytest.mark.slow
def test_perplexity_errors_and_cancel(tiny, tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        evaluate_perplexity(tiny.finetuned, tmp_path / "missing.txt")
    with pytest.raises(ModelFormatError, match="not a model folder"):
        evaluate_perplexity(tmp_path, tiny.dataset)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ModelFormatError, match="fewer than 2 tokens"):
        evaluate_perplexity(tiny.finetuned, empty)
    with pytest.raises(CancelledError):
        evaluate_perplexity(tiny.finetuned, tiny.dataset, cancel=lambda: True)


@pytest.mark.slow
def test_perplexity_windows_follow_the_models_context(tiny_bf16):
    result = evaluate_perplexity(tiny_bf16.finetuned, tiny_bf16.dataset, max_tokens=256)
    # 256 tokens in windows of 128 (the model's context): each window predicts all its tokens but the first
    assert result["window"] == 128 and result["windows"] == 2
    assert math.isfinite(result["perplexity"]) and result["tokens"] == 254
    assert result["dtype"] == "torch.bfloat16" and result["device"] == "cpu"
