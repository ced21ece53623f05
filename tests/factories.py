"""Plain factory functions for the web app's tests (no factory_boy). Each builds valid rows with sensible
defaults; pass keyword arguments to override fields. ``*_build`` variants return unsaved instances."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
from django.contrib.auth import get_user_model
from safetensors.numpy import save_file

from webapp.jobs.models import Job
from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair
from webapp.teams.models import Membership, Team

_counter = itertools.count(1)


def _n() -> int:
    return next(_counter)


def user_create(*, username: str | None = None, password: str = "pw-test-123", **fields):
    username = username or f"user{_n()}"
    return get_user_model().objects.create_user(username=username, password=password, **fields)


def team_build(**fields) -> Team:
    n = _n()
    fields.setdefault("name", f"Team {n}")
    fields.setdefault("slug", f"team-{n}")
    return Team(**fields)


def team_create(*, members: dict | None = None, **fields) -> Team:
    """A team; ``members`` maps users to roles."""
    team = team_build(**fields)
    team.full_clean()
    team.save()
    for user, role in (members or {}).items():
        Membership.objects.create(team=team, user=user, role=role)
    return team


def model_entry_create(*, team: Team, path: str | Path | None = None, **fields) -> ModelEntry:
    n = _n()
    fields.setdefault("name", f"model-{n}")
    fields.setdefault("layout", "safetensors")
    fields.setdefault("files", [{"name": "model.safetensors", "size": 10, "sha256": "0" * 64}])
    return ModelEntry.objects.create(team=team, path=str(path or f"/nonexistent/model-{n}"), **fields)


def pair_create(*, team: Team, base: ModelEntry | None = None, finetuned: ModelEntry | None = None,
                **fields) -> Pair:
    fields.setdefault("name", f"pair-{_n()}")
    base = base or model_entry_create(team=team)
    finetuned = finetuned or model_entry_create(team=team)
    return Pair.objects.create(team=team, base=base, finetuned=finetuned, report={"compatible": True}, **fields)


def dataset_create(*, team: Team, path: str | Path | None = None, **fields) -> Dataset:
    n = _n()
    fields.setdefault("name", f"dataset-{n}")
    fields.setdefault("sha256", "0" * 64)
    return Dataset.objects.create(team=team, path=str(path or f"/nonexistent/data-{n}.txt"), **fields)


def artifact_create(*, team: Team, pair: Pair | None = None, **fields) -> Artifact:
    n = _n()
    fields.setdefault("codec_id", "zstd")
    fields.setdefault("codec_config", {"id": "zstd"})
    fields.setdefault("storage_name", f"{team.slug}/factory-{n}.dvz")
    fields.setdefault("original_bytes", 1000)
    fields.setdefault("compressed_bytes", 500)
    fields.setdefault("ratio", 2.0)
    return Artifact.objects.create(team=team, pair=pair, **fields)


def job_create(*, team: Team, **fields) -> Job:
    fields.setdefault("kind", Job.Kind.COMPRESS)
    fields.setdefault("codec_config", {"id": "zstd"})
    return Job.objects.create(team=team, **fields)


# ---- real model folders --------------------------------------------------------------------------------------
TINY_SHAPES = {
    "model.embed_tokens.weight": ((64, 32), np.float32),
    "model.layers.0.mlp.up_proj.weight": ((48, 32), np.float32),
    "model.layers.0.mlp.down_proj.weight": ((32, 48), np.float16),
    "model.norm.weight": ((32,), np.float32),
}


def tiny_model_write(folder: Path, *, seed: int = 0, base: dict | None = None, delta_sigma: float = 1e-3,
                     shapes: dict | None = None) -> dict:
    """Write a small safetensors checkpoint + config.json into ``folder``; return the tensors.

    With ``base`` (tensors of a previous call) the new tensors are ``base + N(0, delta_sigma)``: a fine-tune."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, (shape, dtype) in (shapes or TINY_SHAPES).items():
        if base is not None and name in base:
            value = base[name].astype(np.float32) + rng.normal(0, delta_sigma, shape).astype(np.float32)
        else:
            value = rng.standard_t(6, size=shape).astype(np.float32) * 0.02
        tensors[name] = value.astype(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["TinyForCausalLM"], "model_type": "tiny",
                                                    "hidden_size": 32}))
    return tensors


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
