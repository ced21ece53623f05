"""modelcodecs.packaged: the real model and text that installed packages ship."""

from __future__ import annotations

import json

import pytest

from modelcodecs import read_model_info
from modelcodecs.errors import ConfigError
from modelcodecs.packaged import python_docs_corpus, smollm2_folder


def test_python_docs_corpus_is_real_text_split_by_topic(tmp_path):
    from pydoc_data.topics import topics

    train, heldout = python_docs_corpus(tmp_path)
    train_text, heldout_text = train.read_text(), heldout.read_text()
    assert len(heldout_text) > 20_000 and len(train_text) > 5 * len(heldout_text)
    assert topics["assert"].strip() in train_text
    assert not any(t.strip() in heldout_text for t in (topics[n] for n in sorted(topics)[:7]))
    with pytest.raises(ConfigError):
        python_docs_corpus(tmp_path, held_out_every=1)


@pytest.mark.slow
def test_smollm2_becomes_a_plain_safetensors_llama_folder(tmp_path):
    pytest.importorskip("gguf")
    folder = smollm2_folder(tmp_path / "smollm2", dtype="BF16")
    info = read_model_info(folder)
    assert info["architecture"] == "LlamaForCausalLM"
    assert info["parameter_count"] == 134_515_008 and info["dtypes"] == {"BF16": info["tensor_count"]}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert smollm2_folder(tmp_path / "smollm2") == folder  # written once, then reused
