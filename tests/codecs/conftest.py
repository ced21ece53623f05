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
