"""Evaluate jobs on artifacts score the original fine-tune too (cached per model and dataset), stream partial
scores, record original -> restored on the artifact, and refuse accuracy jobs on models without a trained head."""

import json
from pathlib import Path
from unittest import mock

import modelcodecs
import pytest

from tests.factories import dataset_create
from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_run, job_submit
from webapp.registry.models import Artifact, Dataset, ModelEntry
from webapp.registry.services import model_register_from_path, pair_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(world, tiny_pair_dirs):
    base_dir, ft_dir = tiny_pair_dirs
    team, user = world["acme"], world["alice"]
    base = model_register_from_path(team=team, user=user, name="base", path=str(base_dir))
    ft = model_register_from_path(team=team, user=user, name="ft", path=str(ft_dir))
    return pair_create(team=team, user=user, name="tiny", base=base, finetuned=ft)


@pytest.fixture
def lossy_artifact(world, pair):
    job = Job.objects.create(team=world["acme"], created_by=world["alice"], kind="compress", pair=pair,
                             codec_config=modelcodecs.get_codec({"id": "rtn", "bits": 8}).get_config())
    job = job_run(job=job)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    return Artifact.objects.get(job=job)


def _text(world, dv_dirs):
    path = dv_dirs["acme"] / "eval.txt"
    path.write_text("the quick brown fox\n" * 20)
    return dataset_create(team=world["acme"], path=path, sha256="ab" * 32)


class EvaluateQualityTests:
    def test_artifact_job_scores_original_and_restored_and_caches_the_original(self, world, pair, lossy_artifact,
                                                                               dv_dirs, collect_events):
        dataset = _text(world, dv_dirs)
        calls = []

        def fake(model_dir, text_path, *, progress, cancel, partial, **kwargs):
            restored = Path(model_dir) != Path(pair.finetuned.path)
            calls.append("restored" if restored else "original")
            partial({"perplexity": 9.0, "tokens": 10})
            return {"perplexity": 10.5 if restored else 10.0, "top1_accuracy": 0.3 if restored else 0.31}

        first = Job.objects.create(team=world["acme"], kind="evaluate", artifact=lossy_artifact, dataset=dataset)
        events = collect_events(f"job-{first.pk}")
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", fake):
            first = job_run(job=first)
            second = job_run(job=Job.objects.create(team=world["acme"], kind="evaluate", artifact=lossy_artifact,
                                                    dataset=dataset))
        assert first.status == second.status == Job.Status.SUCCEEDED, first.error + first.log_tail
        assert calls == ["original", "restored", "restored"]  # the second job found the original in the cache
        assert first.metrics["original"]["perplexity"] == 10.0 and first.metrics["restored"]["perplexity"] == 10.5
        assert first.metrics["delta"] == {"perplexity": 0.5, "top1_accuracy": pytest.approx(-0.01)}
        assert first.metrics["perplexity"] == 10.5
        partial = [e["job"]["metrics"]["partial"] for e in events.drain() if "partial" in e["job"]["metrics"]]
        assert partial[0] == {"original": {"perplexity": 9.0, "tokens": 10}}  # streamed while running
        assert partial[-1]["restored"] == {"perplexity": 9.0, "tokens": 10}
        assert "cached" in second.log_tail
        lossy_artifact.refresh_from_db()
        assert lossy_artifact.perplexity == 10.5
        assert lossy_artifact.quality[str(dataset.pk)]["original"]["perplexity"] == 10.0
        scores = ModelEntry.objects.get(pk=pair.finetuned.pk).scores
        assert list(scores) == [f"{dataset.pk}:{dataset.sha256}:{{}}"]

    def test_the_cache_key_follows_the_dataset_content_and_options(self, world, pair, lossy_artifact, dv_dirs):
        dataset = _text(world, dv_dirs)
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", return_value={"perplexity": 3.0}) as ev:
            job_run(job=Job.objects.create(team=world["acme"], kind="evaluate", model=pair.finetuned,
                                           dataset=dataset))
            job_run(job=Job.objects.create(team=world["acme"], kind="evaluate", model=pair.finetuned,
                                           dataset=dataset, options={"max_tokens": 64}))
            Dataset.objects.filter(pk=dataset.pk).update(sha256="cd" * 32)
            dataset.refresh_from_db()
            job_run(job=Job.objects.create(team=world["acme"], kind="evaluate", model=pair.finetuned,
                                           dataset=dataset))
        assert ev.call_count == 3 and ev.call_args_list[1].kwargs["max_tokens"] == 64
        assert len(ModelEntry.objects.get(pk=pair.finetuned.pk).scores) == 3


class AccuracySubmitTests:
    def _labelled(self, world, dv_dirs, rows="text,label\nhello,pos\nbye,neg\n"):
        path = dv_dirs["acme"] / "labelled.csv"
        path.write_text(rows)
        return dataset_create(team=world["acme"], path=path, kind=Dataset.Kind.LABELLED,
                              info={"format": "csv", "rows": 2, "labels": {"neg": 1, "pos": 1}})

    def test_a_model_without_a_classification_head_is_refused_at_submit(self, world, pair, dv_dirs):
        dataset = self._labelled(world, dv_dirs)
        with pytest.raises(ApplicationError, match="no trained classification head"):
            job_submit(team=world["acme"], user=world["alice"], kind="evaluate", model=pair.finetuned,
                       dataset=dataset)
        assert not Job.objects.filter(kind="evaluate").exists()

    def test_labels_the_model_does_not_know_are_refused_naming_the_row(self, world, pair, dv_dirs):
        config_path = Path(pair.finetuned.path) / "config.json"
        config = json.loads(config_path.read_text())
        config.update(architectures=["LlamaForSequenceClassification"], id2label={"0": "neg", "1": "pos"})
        config_path.write_text(json.dumps(config))
        dataset = self._labelled(world, dv_dirs, "text,label\nhello,pos\nbye,maybe\n")
        with pytest.raises(ApplicationError, match="row 2: label 'maybe'"):
            job_submit(team=world["acme"], user=world["alice"], kind="evaluate", model=pair.finetuned,
                       dataset=dataset)
        good = self._labelled(world, dv_dirs)
        with mock.patch("webapp.jobs.services.transaction.on_commit"):
            job = job_submit(team=world["acme"], user=world["alice"], kind="evaluate", model=pair.finetuned,
                             dataset=good)
        assert job.kind == "evaluate"
