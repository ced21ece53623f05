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
