"""job_run on a tiny real pair (a few small tensors), with the real modelcodecs pipeline."""

import hashlib
from pathlib import Path
from unittest import mock

import modelcodecs
import pytest
from django.core.files.storage import FileSystemStorage, Storage

from tests.factories import dataset_create
from webapp.jobs.models import Job
from webapp.jobs.services import job_fail, job_run
from webapp.registry.models import Artifact
from webapp.registry.services import model_register_from_path, pair_create

pytestmark = pytest.mark.django_db


def _codec_id() -> str:
    ids = {cls.codec_id for cls in modelcodecs.list_codecs()}
    return "fmdelta" if "fmdelta" in ids else "zstd"


def _compress_job(world, pair, codec=None, **fields) -> Job:
    config = modelcodecs.get_codec(codec or _codec_id()).get_config()
    return Job.objects.create(team=world["acme"], created_by=world["alice"], kind="compress", pair=pair,
                              codec_config=config, **fields)


def _visible_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                    p.relative_to(folder).parts)]


def _all_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


class JobRunCompressTests:
    def test_compress_creates_the_artifact_and_publishes(self, world, pair, dv_dirs, collect_events):
        job = _compress_job(world, pair)
        job_events = collect_events(f"job-{job.pk}")
        team_events = collect_events("team-acme")
        job = job_run(job=job)

        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        assert job.progress == 100 and job.started_at and job.finished_at and job.error == ""
        artifact = Artifact.objects.get(job=job)
        path = dv_dirs["artifacts"] / artifact.storage_name
        assert path.is_file() and path.stat().st_size == artifact.compressed_bytes
        ft_bytes = sum(f["size"] for f in pair.finetuned.files)
        assert artifact.original_bytes == ft_bytes
        assert artifact.ratio == pytest.approx(ft_bytes / artifact.compressed_bytes, rel=1e-3)
        assert artifact.codec_id == job.codec_config["id"] and artifact.pair == pair
        assert {"mb_per_s", "seconds", "peak_rss_bytes"} <= set(artifact.metrics)
        assert job.metrics["artifact_id"] == artifact.pk
        # nothing else was left in the storage (no temporaries)
        assert _all_files(dv_dirs["artifacts"]) == [path]

        statuses = [e["job"]["status"] for e in job_events.drain()]
        assert statuses[0] == "running" and statuses[-1] == "succeeded"
        final = team_events.drain()[-1]["job"]
        assert final["artifact_id"] == artifact.pk and final["progress"] == 100

    def test_progress_is_written_to_the_row_while_running(self, world, pair, settings):
        settings.DELTAVAULT_PROGRESS_INTERVAL = 0.0
        seen = []
        real = modelcodecs.compress_model

        def spy(*args, progress=None, **kwargs):
            def wrapped(done, total, stage):
                progress(done, total, stage)
                seen.append(Job.objects.values_list("progress", "stage").get(pk=job.pk))

            return real(*args, progress=wrapped, **kwargs)

        job = _compress_job(world, pair)
        with mock.patch.object(modelcodecs, "compress_model", spy):
            job_run(job=job)
        assert seen, "the codec reported no progress"
        assert seen[-1][0] == pytest.approx(100.0)
        assert all(0 <= p <= 100 for p, _ in seen) and all(stage for _, stage in seen)

    def test_cancel_requested_stops_the_job_and_leaves_nothing(self, world, pair, dv_dirs, collect_events):
        job = _compress_job(world, pair)
        events = collect_events(f"job-{job.pk}")
        real = modelcodecs.compress_model

        def cancel_midway(*args, progress=None, cancel=None, **kwargs):
            def wrapped(done, total, stage):
                progress(done, total, stage)
                Job.objects.filter(pk=job.pk).update(cancel_requested=True)

            return real(*args, progress=wrapped, cancel=cancel, **kwargs)

        with mock.patch.object(modelcodecs, "compress_model", cancel_midway):
            job = job_run(job=job)
        assert job.status == Job.Status.CANCELLED and job.finished_at
        assert not Artifact.objects.exists()
        assert _all_files(dv_dirs["artifacts"]) == []
        assert events.drain()[-1]["job"]["status"] == "cancelled"

    def test_codec_error_fails_the_job_with_its_message_and_cleans_up(self, world, pair, dv_dirs):
        def broken(finetuned_dir, out_path, **kwargs):
            Path(out_path).parent.joinpath(".partial-xyz").write_bytes(b"half")
            Path(out_path).write_bytes(b"not finished")
            raise modelcodecs.ModelFormatError("bad safetensors header in model.safetensors")

        job = _compress_job(world, pair)
        with mock.patch.object(modelcodecs, "compress_model", broken):
            job = job_run(job=job)
        assert job.status == Job.Status.FAILED
        assert job.error == "bad safetensors header in model.safetensors"
        assert not Artifact.objects.exists()
        assert _all_files(dv_dirs["artifacts"]) == []

    def test_unexpected_error_records_class_and_message_but_not_the_traceback(self, world, pair, dv_dirs, caplog):
        job = _compress_job(world, pair)
        with mock.patch.object(modelcodecs, "compress_model", side_effect=KeyError("boom")):
            job = job_run(job=job)
        assert job.status == Job.Status.FAILED
        assert job.error == "KeyError: 'boom'"
        # the traceback (server paths, code) goes to the worker's log only
        assert "Traceback" not in job.log_tail and "details in the worker log" in job.log_tail
        assert any(r.exc_info for r in caplog.records if "failed" in r.getMessage())
        assert not Artifact.objects.exists() and _all_files(dv_dirs["artifacts"]) == []

    def test_a_finished_job_is_not_run_again(self, world, pair):
        job = _compress_job(world, pair, status=Job.Status.CANCELLED)
        with mock.patch.object(modelcodecs, "compress_model") as compress:
            job = job_run(job=job)
        compress.assert_not_called()
        assert job.status == Job.Status.CANCELLED

    def test_a_job_cancelled_before_it_starts_does_no_work(self, world, pair):
        job = _compress_job(world, pair, cancel_requested=True)
        with mock.patch.object(modelcodecs, "compress_model") as compress:
            job = job_run(job=job)
        compress.assert_not_called()
        assert job.status == Job.Status.CANCELLED

    def test_a_rerun_after_a_crash_cleans_the_leftovers(self, world, pair, dv_dirs):
        job = _compress_job(world, pair, attempts=1)  # its worker died; the sweep requeued it
        leftover = dv_dirs["home"] / "tmp" / f"job-{job.pk}"
        leftover.mkdir(parents=True)
        (leftover / "artifact.dvz").write_bytes(b"half-written")
        job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED
        assert not leftover.exists()
        assert len(_all_files(dv_dirs["artifacts"])) == 1

    def test_job_fail_removes_what_a_killed_run_left(self, world, pair, dv_dirs, settings):
        job = _compress_job(world, pair, status=Job.Status.RUNNING)
        leftovers = [Path(settings.DELTAVAULT_TMP_DIR) / f"job-{job.pk}",
                     Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)]
        for folder in leftovers:
            folder.mkdir(parents=True)
            (folder / "half").write_bytes(b"x")
        job_fail(job=job, error="WorkerLostError: signal 9")
        assert not any(folder.exists() for folder in leftovers)

    def test_job_fail_marks_failed_once(self, world, pair, collect_events):
        job = _compress_job(world, pair, status=Job.Status.RUNNING)
        events = collect_events("team-acme")
        job = job_fail(job=job, error="WorkerLostError: killed", log="Traceback ...")
        assert job.status == Job.Status.FAILED and job.error == "WorkerLostError: killed"
        assert "Traceback" in job.log_tail
        assert events.drain()[-1]["job"]["status"] == "failed"
        job.status = Job.Status.SUCCEEDED
        job.save()
        assert job_fail(job=job, error="late").status == Job.Status.SUCCEEDED


class JobRunDecompressTests:
    def _artifact(self, world, pair) -> Artifact:
        job = job_run(job=_compress_job(world, pair))
        assert job.status == Job.Status.SUCCEEDED, job.error
        return Artifact.objects.get(job=job)

    def test_decompress_restores_verifies_and_marks_the_artifact(self, world, pair, dv_dirs, settings):
        artifact = self._artifact(world, pair)
        job = Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact, pair=pair)
        job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        out_dir = Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)
        assert job.metrics["output_dir"] == str(out_dir)
        ft_dir = Path(pair.finetuned.path)
        for f in pair.finetuned.files:
            assert (out_dir / f["name"]).read_bytes() == (ft_dir / f["name"]).read_bytes()
        assert job.metrics["verification"]["status"] == "verified"
        artifact.refresh_from_db()
        assert artifact.verification == "verified" and artifact.verified_at

    def test_hash_mismatch_fails_verification(self, world, pair, settings):
        artifact = self._artifact(world, pair)
        finetuned = pair.finetuned
        finetuned.files = [{**f, "sha256": hashlib.sha256(b"other").hexdigest()} for f in finetuned.files]
        finetuned.save()
        job = Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact, pair=pair)
        job = job_run(job=job)
        assert job.status == Job.Status.FAILED and "differ" in job.error
        artifact.refresh_from_db()
        assert artifact.verification == "failed"
        assert not (Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)).exists()

    def test_missing_artifact_file_fails_clearly(self, world, pair, dv_dirs):
        artifact = self._artifact(world, pair)
        (dv_dirs["artifacts"] / artifact.storage_name).unlink()
        job = job_run(job=Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact))
        assert job.status == Job.Status.FAILED and "missing" in job.error

    def test_corrupt_artifact_fails_with_the_codec_message(self, world, pair, dv_dirs):
        artifact = self._artifact(world, pair)
        path = dv_dirs["artifacts"] / artifact.storage_name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        job = job_run(job=Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact))
        assert job.status == Job.Status.FAILED and job.error and "Traceback" not in job.error


class RemoteStorage(Storage):
    """A storage without local paths, as S3 is (Storage.path raises NotImplementedError): DeltaVault must upload
    and download through the storage API. Bytes are kept in a folder behind that API."""

    def __init__(self, location):
        self._inner = FileSystemStorage(location=location)

    def _open(self, name, mode="rb"):
        return self._inner._open(name, mode)

    def _save(self, name, content):
        return self._inner._save(name, content)

    def exists(self, name):
        return self._inner.exists(name)

    def delete(self, name):
        self._inner.delete(name)

    def size(self, name):
        return self._inner.size(name)


class JobRunRemoteStorageTests:
    def test_compress_and_restore_through_a_storage_without_local_paths(self, world, pair, dv_dirs, settings):
        storages = dict(settings.STORAGES)
        storages["artifacts"] = {"BACKEND": f"{__name__}.RemoteStorage",
                                 "OPTIONS": {"location": str(dv_dirs["artifacts"])}}
        settings.STORAGES = storages
        job = job_run(job=_compress_job(world, pair))
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        artifact = Artifact.objects.get(job=job)
        assert (dv_dirs["artifacts"] / artifact.storage_name).stat().st_size == artifact.compressed_bytes
        assert not _all_files(Path(settings.DELTAVAULT_TMP_DIR))

        restore = job_run(job=Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact,
                                                 pair=pair))
        assert restore.status == Job.Status.SUCCEEDED, restore.error + restore.log_tail
        assert restore.metrics["verification"]["status"] == "verified"
        assert not _all_files(Path(settings.DELTAVAULT_TMP_DIR))  # the downloaded copy is gone


class JobRunEvaluateTests:
    def _dataset(self, world, dv_dirs):
        text = dv_dirs["acme"] / "eval.txt"
        text.write_text("the quick brown fox jumps over the lazy dog\n" * 20)
        return dataset_create(team=world["acme"], path=text)

    def test_evaluate_a_model_stores_perplexity(self, world, pair, dv_dirs):
        dataset = self._dataset(world, dv_dirs)
        job = Job.objects.create(team=world["acme"], kind="evaluate", model=pair.finetuned, dataset=dataset)
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", return_value={"perplexity": 12.5}) as ev:
            job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        assert job.metrics["perplexity"] == 12.5
        assert ev.call_args.args == (pair.finetuned.path, dataset.path)

    def test_evaluate_an_artifact_restores_it_first_and_records_perplexity(self, world, pair, dv_dirs, settings):
        artifact = JobRunDecompressTests()._artifact(world, pair)
        dataset = self._dataset(world, dv_dirs)
        seen = {}

        def fake_eval(model_dir, text_path, **kwargs):
            seen["files"] = sorted(p.name for p in Path(model_dir).iterdir())
            return {"perplexity": 7.25, "tokens": 100}

        job = Job.objects.create(team=world["acme"], kind="evaluate", artifact=artifact, dataset=dataset)
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", fake_eval):
            job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        assert seen["files"] == sorted(f["name"] for f in pair.finetuned.files)
        assert job.metrics["perplexity"] == 7.25 and job.metrics["tokens"] == 100
        artifact.refresh_from_db()
        assert artifact.perplexity == 7.25
        assert not any(Path(settings.DELTAVAULT_TMP_DIR).glob("*"))  # the restored copy is gone


@pytest.mark.slow
class JobRunRealModelTests:
    def test_compress_restore_and_evaluate_a_tiny_transformer(self, world, dv_dirs):
        """A real (tiny) Llama pair: compress with the default codec, restore + verify, then the artifact's
        perplexity equals the fine-tuned model's (lossless codec) and is recorded on the artifact."""
        from modelcodecs.synthetic import make_tiny_transformer_pair

        tiny = make_tiny_transformer_pair(dv_dirs["acme"] / "llm", steps=2, base_steps=2, n_layer=1, d_model=32,
                                          vocab_size=300, seq_len=32, batch_size=2)
        team, user = world["acme"], world["alice"]
        base = model_register_from_path(team=team, user=user, name="base", path=str(tiny.base))
        ft = model_register_from_path(team=team, user=user, name="ft", path=str(tiny.finetuned))
        assert ft.architecture == "LlamaForCausalLM"
        pair = pair_create(team=team, user=user, name="llm", base=base, finetuned=ft)
        dataset = dataset_create(team=team, path=tiny.dataset)

        compress = job_run(job=_compress_job(world, pair))
        assert compress.status == Job.Status.SUCCEEDED, compress.error + compress.log_tail
        artifact = Artifact.objects.get(job=compress)
        assert artifact.ratio > 1.0

        restore = job_run(job=Job.objects.create(team=team, kind="decompress", artifact=artifact, pair=pair))
        assert restore.status == Job.Status.SUCCEEDED, restore.error
        assert restore.metrics["verification"] == {"status": "verified", "checked": len(ft.files),
                                                    "mismatched": []}

        options = {"max_tokens": 1024}
        of_model = job_run(job=Job.objects.create(team=team, kind="evaluate", model=ft, dataset=dataset,
                                                  options=options))
        of_artifact = job_run(job=Job.objects.create(team=team, kind="evaluate", artifact=artifact,
                                                     dataset=dataset, options=options))
        assert of_model.status == of_artifact.status == Job.Status.SUCCEEDED, of_artifact.error
        assert of_model.metrics["perplexity"] > 1.0
        assert of_artifact.metrics["perplexity"] == pytest.approx(of_model.metrics["perplexity"], rel=1e-6)
        artifact.refresh_from_db()
        assert artifact.perplexity == of_artifact.metrics["perplexity"]
