"""``manage.py deltavault_demo``: creates the demo user, team, pair, dataset and a finished compression job, and
running it again changes nothing."""

from __future__ import annotations

from io import StringIO
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from tests.factories import tiny_model_write
from webapp.jobs.models import Job
from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair
from webapp.teams.models import Team

pytestmark = pytest.mark.django_db

COMMAND = "webapp.dashboard.management.commands.deltavault_demo"


def _fake_pair(root: Path) -> tuple[Path, Path]:
    base = tiny_model_write(root / "base", seed=1)
    tiny_model_write(root / "finetuned", seed=2, base=base)
    return root / "base", root / "finetuned"


def _run(*args) -> str:
    out = StringIO()
    with mock.patch(f"{COMMAND}.make_pair", side_effect=_fake_pair) as make:
        call_command("deltavault_demo", *args, stdout=out)
    return out.getvalue(), make.call_count


def test_demo_creates_everything_once(dv_dirs):
    output, made = _run()
    assert made == 1
    assert "demo ready" in output
    assert authenticate(username="demo", password="demo-password") is not None
    team = Team.objects.get(slug="demo")
    assert ModelEntry.objects.filter(team=team).count() == 2
    pair = Pair.objects.get(team=team)
    assert pair.report.get("compatible") is True
    assert Dataset.objects.filter(team=team).count() == 1
    compress = Job.objects.filter(team=team, kind="compress")
    assert compress.exists()
    assert all(job.status == "succeeded" for job in compress), [j.error for j in compress]
    artifacts = Artifact.objects.filter(pair=pair)
    assert artifacts.count() == compress.count()
    assert {a.codec_id for a in artifacts} <= {"fmdelta", "zstd"}
    assert all(a.ratio > 1.0 for a in artifacts)
    counts = (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count(), Job.objects.count(),
              Artifact.objects.count())

    output, made = _run()
    assert made == 0
    assert (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count(), Job.objects.count(),
            Artifact.objects.count()) == counts


def test_demo_without_job(dv_dirs):
    _run("--no-job", "--username", "eve", "--password", "eve-password-1")
    assert Job.objects.count() == 0
    assert authenticate(username="eve", password="eve-password-1") is not None


def test_gradients_command_trains_registers_and_compresses(dv_dirs, monkeypatch):
    """The real training runs are replaced by tiny ones (same code, a few steps); the rest is the command."""
    from modelcodecs import gradient_runs
    from webapp.registry.models import GradientSet

    _run("--no-job")
    real_cnn, real_text = gradient_runs.train_digits_cnn, gradient_runs.train_text_transformer
    monkeypatch.setattr(gradient_runs, "train_digits_cnn", lambda out, steps, every: real_cnn(out, steps=4, every=2))
    monkeypatch.setattr(gradient_runs, "train_text_transformer",
                        lambda out, steps, every: real_text(out, steps=2, every=1, hidden=16, layers=1, context=16))
    call_command("deltavault_gradients")
    sets = {g.name: g for g in GradientSet.objects.all()}
    assert set(sets) == {"digits-cnn", "docs-transformer"}
    assert sets["digits-cnn"].steps == [0, 2] and "handwritten digits" in sets["digits-cnn"].description
    assert Artifact.objects.filter(gradient_set__isnull=False, verification="unverified").count() == 4
    call_command("deltavault_gradients")  # again: nothing new
    assert GradientSet.objects.count() == 2
