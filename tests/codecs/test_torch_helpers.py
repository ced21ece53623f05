"""modelcodecs._torch: the one device choice and model loader of codecs and evaluators that run models."""

from __future__ import annotations

import pytest

from modelcodecs._torch import load_model, load_tokenizer, resolve_device
from modelcodecs.errors import ConfigError, ModelFormatError

torch = pytest.importorskip("torch")


def test_auto_is_cuda_exactly_when_torch_sees_one():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_by_name():
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ConfigError, match="device must be one of"):
        resolve_device("tpu")


def test_a_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(ModelFormatError, match="no config.json"):
        load_tokenizer(tmp_path)


def test_loads_a_causal_lm_on_the_chosen_device_in_eval_mode(tiny_bf16):
    model = load_model(tiny_bf16.finetuned, device="cpu")
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype == torch.bfloat16  # dtype "auto" keeps the checkpoint's
