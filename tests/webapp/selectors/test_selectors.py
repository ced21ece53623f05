import pytest
from django.http import Http404

from tests.factories import artifact_create, dataset_create, job_create, model_entry_create, pair_create
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_get, job_list, job_state
from webapp.registry.selectors import (
    artifact_get,
    artifact_list,
    dataset_get,
    model_get,
    model_list,
    pair_get,
    pair_list,
)

pytestmark = pytest.mark.django_db


class JobSelectorTests:
    def test_list_filters_by_status_kind_and_pair(self, world):
        team = world["acme"]
        pair = pair_create(team=team)
        a = job_create(team=team, pair=pair, status=Job.Status.RUNNING)
        b = job_create(team=team, kind=Job.Kind.EVALUATE, status=Job.Status.FAILED)
        c = job_create(team=team, kind=Job.Kind.DECOMPRESS, status=Job.Status.SUCCEEDED)
        job_create(team=world["other"], status=Job.Status.RUNNING)
        assert list(job_list(team=team)) == [c, b, a]
        assert list(job_list(team=team, filters={"status": ["running"]})) == [a]
        assert list(job_list(team=team, filters={"status": ["running", "failed"]})) == [b, a]
        assert list(job_list(team=team, filters={"kind": ["evaluate"]})) == [b]
        assert list(job_list(team=team, filters={"pair": pair.pk})) == [a]
        assert set(job_list(user=world["alice"])) == {a, b, c}

    def test_get_is_scoped(self, world):
        job = job_create(team=world["acme"])
        assert job_get(id=job.pk, user=world["victor"]) == job
        with pytest.raises(Http404):
            job_get(id=job.pk, user=world["bob"])
        with pytest.raises(Http404):
            job_get(id=job.pk, team=world["other"])

    def test_state_has_everything_the_ui_shows(self, world):
        pair = pair_create(team=world["acme"])
        job = job_create(team=world["acme"], pair=pair, progress=42.5, stage="encoding", metrics={"x": 1})
        artifact = artifact_create(team=world["acme"], pair=pair, job=job)
        state = job_state(job)
        assert state["id"] == job.pk and state["team"] == "acme" and state["codec"] == "zstd"
        assert state["progress"] == 42.5 and state["stage"] == "encoding" and state["metrics"] == {"x": 1}
        assert state["pair_id"] == pair.pk and state["artifact_id"] == artifact.pk
        assert state["created_at"].endswith("+00:00") and state["started_at"] is None
        import json

        json.dumps(state)  # JSON-serialisable as is


class RegistrySelectorTests:
    def test_gets_are_scoped_to_the_users_teams(self, world):
        team = world["acme"]
        model = model_entry_create(team=team)
        pair = pair_create(team=team)
        dataset = dataset_create(team=team)
        artifact = artifact_create(team=team, pair=pair)
        for getter, obj in ((model_get, model), (pair_get, pair), (dataset_get, dataset),
                            (artifact_get, artifact)):
            assert getter(id=obj.pk, user=world["victor"]) == obj
            assert getter(id=obj.pk, team=team) == obj
            with pytest.raises(Http404):
                getter(id=obj.pk, user=world["bob"])
            with pytest.raises(Http404):
                getter(id=obj.pk, team=world["other"])

    def test_list_filters(self, world):
        team = world["acme"]
        base = model_entry_create(team=team, name="llama-base", architecture="LlamaForCausalLM")
        ft = model_entry_create(team=team, name="llama-chat")
        other = model_entry_create(team=team, name="gpt")
        pair = pair_create(team=team, base=base, finetuned=ft)
        assert set(model_list(team=team, filters={"name": "llama"})) == {base, ft}
        assert list(model_list(team=team, filters={"architecture": "LlamaForCausalLM"})) == [base]
        assert list(pair_list(team=team, filters={"model": ft.pk})) == [pair]
        assert list(pair_list(team=team, filters={"model": other.pk})) == []
        a = artifact_create(team=team, pair=pair, codec_id="fmdelta")
        artifact_create(team=team, codec_id="zstd")
        assert list(artifact_list(team=team, filters={"codec": "fmdelta"})) == [a]
        assert list(artifact_list(team=team, filters={"pair": pair.pk})) == [a]
