"""``modelcodecs bench --series`` on a tiny Llama trained from scratch (lmz itself is only run by the benchmark)."""

from __future__ import annotations

import json
import math

import pytest

from modelcodecs.bench_series import format_series, make_training_run, run_series_bench
from modelcodecs.errors import ConfigError



def test_scratch_llama_series_is_trained_saved_and_restored_byte_for_byte(tmp_path):
    pytest.importorskip("gguf")  # SmolLM2's tokenizer is read from its GGUF file
    run = tmp_path / "run"
    training = make_training_run(run, tmp_path, steps=4, every=2, model_name="llama-scratch", dtype="F32",
                                 hidden=64, layers=1, log=lambda msg: None)
    config = json.loads((run / "checkpoint-4" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 1, 49152)
    assert len(training["train_losses"]) == 4 and sorted(training["heldout_losses"], key=int) == ["0", "2", "4"]
    # a random initialisation predicts about uniformly over SmolLM2's 49152 tokens
    assert abs(training["heldout_losses"]["0"] - math.log(49152)) < 0.5
    weights = [(run / f"checkpoint-{k}" / "model.safetensors").read_bytes() for k in (0, 2, 4)]
    assert weights[0] != weights[1] != weights[2]
    assert make_training_run(run, tmp_path, steps=4, every=2, model_name="llama-scratch", dtype="F32", hidden=64,
                             layers=1, log=lambda msg: pytest.fail("a complete run is reused")) == training

    result = run_series_bench(run, tmp_path / "work", keyframe_every=2, lmz=None, log=lambda msg: None)
    rows = result["rows"]
    assert set(rows) == {"series, keyframe every 2", "series, one chain", "zstd-3"}
    assert rows["series, keyframe every 2"]["byte_identical"] and rows["series, one chain"]["byte_identical"]
    assert rows["series, one chain"]["codecs"] == {0: "fmdelta-nobase", 2: "fmdelta", 4: "fmdelta"}
    assert rows["series, keyframe every 2"]["codecs"][4] == "fmdelta-nobase"
    result["training"] = training
    table = format_series(result)
    assert "llama-scratch" in table and "| series, one chain |" in table


def test_scratch_llama_refuses_a_width_its_heads_do_not_divide(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 64"):
        make_training_run(tmp_path / "run", tmp_path, steps=2, every=1, model_name="llama-scratch", hidden=96,
                          layers=1, log=lambda msg: None)
