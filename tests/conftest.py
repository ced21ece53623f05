"""Fixtures shared by the web app's tests (codec tests do not use them)."""

from __future__ import annotations

import pytest


@pytest.fixture
def in_memory_channel_layer(settings):
    """Switch to the in-memory channel layer (the test settings use Redis, which end-to-end tests need)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer",
                                           "CONFIG": {"capacity": 10_000}}}
    from channels.layers import get_channel_layer

    return get_channel_layer()


@pytest.fixture
def dv_dirs(settings, tmp_path):
    """Per-test DeltaVault folders: model roots, artifacts storage, uploads, restored, tmp."""
    root = tmp_path / "roots"
    root.mkdir()
    artifacts = tmp_path / "artifacts"
    settings.DELTAVAULT_MODEL_ROOTS = [root]
    settings.DELTAVAULT_UPLOADS_DIR = tmp_path / "uploads"
    settings.DELTAVAULT_RESTORED_DIR = tmp_path / "restored"
    settings.DELTAVAULT_TMP_DIR = tmp_path / "tmp"
    storages = dict(settings.STORAGES)
    storages["artifacts"] = {"BACKEND": "django.core.files.storage.FileSystemStorage",
                             "OPTIONS": {"location": str(artifacts)}}
    settings.STORAGES = storages
    # the folder of team "acme" (the ``world`` fixture's team) under the root: teams register only from their own
    acme = root / "acme"
    acme.mkdir()
    return {"root": root, "acme": acme, "artifacts": artifacts, "home": tmp_path}


@pytest.fixture
def tiny_pair_dirs(dv_dirs):
    """A base and a fine-tuned safetensors folder in team acme's folder: (base_dir, finetuned_dir)."""
    from tests.factories import tiny_model_write

    base_dir = dv_dirs["acme"] / "tiny-base"
    ft_dir = dv_dirs["acme"] / "tiny-ft"
    base = tiny_model_write(base_dir, seed=1)
    tiny_model_write(ft_dir, seed=2, base=base)
    return base_dir, ft_dir
