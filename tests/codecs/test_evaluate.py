"""The evaluators of modelcodecs.evaluate, checked against values computed by hand on a tiny model."""

from __future__ import annotations

import math

import pytest

from modelcodecs import synthetic
from modelcodecs.errors import CancelledError, ModelFormatError
from modelcodecs.evaluate import evaluate_perplexity


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
    seen = []
    one = evaluate_perplexity(tiny.finetuned, text, max_tokens=200, window=window, batch_size=1,
                                        progress=lambda d, t, s: seen.append((d, t)))
    many = evaluate_perplexity(tiny.finetuned, text, max_tokens=200, window=window, batch_size=3)
    assert one["tokens"] == many["tokens"] == count
    assert one["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert many["perplexity"] == pytest.approx(one["perplexity"], rel=1e-5)
    assert seen[-1] == (count, count) and all(a[0] < b[0] for a, b in zip(seen, seen[1:]))


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
