"""Fixtures for the modelcodecs tests: tiny base/fine-tune folders and artifacts made from them."""

from __future__ import annotations

import pytest

from common import make_pair

import modelcodecs


@pytest.fixture
def pair(tmp_path):
    """(base_dir, finetuned_dir): safetensors base, single-file safetensors fine-tune with extras."""
    return make_pair(tmp_path)


@pytest.fixture
def artifact(pair, tmp_path):
    """(artifact_path, base_dir, finetuned_dir) for a small xor-zstd artifact (uses the base)."""
    base_dir, ft_dir = pair
    path = tmp_path / "model.dvz"
    modelcodecs.compress_model(ft_dir, path, codec={"id": "xor-zstd", "chunk_bytes": 4096}, base_dir=base_dir,
                               threads=1)
    return path, base_dir, ft_dir


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny Llama base/fine-tune pair in fp32 with its held-out text (modelcodecs.synthetic)."""
    pytest.importorskip("transformers")
    from modelcodecs import synthetic

    return synthetic.make_tiny_transformer_pair(tmp_path_factory.mktemp("tiny"), steps=15, base_steps=20,
                                                d_model=32, seed=0)


@pytest.fixture(scope="session")
def tiny_bf16(tmp_path_factory):
    """The smallest tiny pair, saved in bf16."""
    pytest.importorskip("transformers")
    from modelcodecs import synthetic

    return synthetic.make_tiny_transformer_pair(tmp_path_factory.mktemp("tiny-bf16"), steps=2, base_steps=0,
                                                d_model=16, n_layer=1, dtype="BF16", seed=1)
