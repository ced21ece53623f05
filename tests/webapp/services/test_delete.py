"""Deleting models, pairs, datasets, artifacts and jobs (issue 11 §1): team admins only; a base that artifacts
still need goes only together with them; rows go in one transaction and files only after it commits; the
periodic housekeeping expires restored copies (pinned ones stay) and sweeps orphaned artifact files."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from tests.factories import artifact_create, dataset_create, job_create, model_entry_create, pair_create
from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_delete, job_pin, restored_expire, work_dirs_sweep
from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair
from webapp.registry.services import (artifact_delete, artifact_storage_sweep, dataset_delete, model_delete,
                                      pair_delete)
from workers.tasks import housekeeping

pytestmark = pytest.mark.django_db


def _stored(dv_dirs, artifact: Artifact, content: bytes = b"dvz") -> os.PathLike:
    path = dv_dirs["artifacts"] / artifact.storage_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


@pytest.fixture
def stocked(world, dv_dirs):
    team = world["acme"]
    pair = pair_create(team=team, name="p")
    artifact = artifact_create(team=team, pair=pair, codec_id="fmdelta",
                               codec_config={"id": "fmdelta", "chunk_elements": 262144}, compressed_bytes=3)
    return {"pair": pair, "artifact": artifact, "file": _stored(dv_dirs, artifact)}


class ModelDeleteTests:
    def test_a_base_its_artifacts_need_is_refused_and_the_error_names_them(self, world, stocked):
        base = stocked["pair"].base
        with pytest.raises(ApplicationError) as err:
            model_delete(model=base, user=world["alice"])
        assert "fmdelta (chunk_elements=262144) artifact #" in err.value.message
        assert "of pair p" in err.value.message
        assert err.value.extra["artifacts"] == [stocked["artifact"].pk]
        assert ModelEntry.objects.filter(pk=base.pk).exists() and Pair.objects.exists()
        assert stocked["file"].exists()

    def test_with_artifacts_deletes_pairs_artifacts_and_files_after_commit(self, world, stocked,
                                                                          django_capture_on_commit_callbacks):
        base = stocked["pair"].base
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            summary = model_delete(model=base, user=world["alice"], with_artifacts=True)
            assert stocked["file"].exists()  # not before the commit
        for callback in callbacks:
            callback()
        assert summary == {"artifacts": 1, "pairs": 1, "bytes_freed": 3, "models": 1}
        assert not ModelEntry.objects.filter(pk=base.pk).exists()
        assert not Pair.objects.exists() and not Artifact.objects.exists()
        assert not stocked["file"].exists()
        assert ModelEntry.objects.filter(pk=stocked["pair"].finetuned_id).exists()  # the other model stays

    def test_a_rolled_back_delete_leaves_every_file(self, world, stocked, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            try:
                with transaction.atomic():
                    model_delete(model=stocked["pair"].base, user=world["alice"], with_artifacts=True)
                    raise RuntimeError("boom")
            except RuntimeError:
                pass
        assert Artifact.objects.filter(pk=stocked["artifact"].pk).exists() and stocked["file"].exists()

    def test_members_and_viewers_may_not_delete(self, world, stocked):
        for who in ("mallory", "victor"):
            with pytest.raises(PermissionDenied, match="admins"):
                model_delete(model=stocked["pair"].base, user=world[who], with_artifacts=True)
        assert Artifact.objects.exists()

    def test_an_uploaded_model_folder_is_removed_a_server_folder_stays(self, world, dv_dirs,
                                                                       django_capture_on_commit_callbacks):
        uploaded = dv_dirs["home"] / "uploads" / "m"
        uploaded.mkdir(parents=True)
        (uploaded / "model.safetensors").write_bytes(b"x")
        served = dv_dirs["root"] / "served"
        served.mkdir()
        up = model_entry_create(team=world["acme"], path=uploaded, source=ModelEntry.Source.UPLOAD)
        srv = model_entry_create(team=world["acme"], path=served)
        with django_capture_on_commit_callbacks(execute=True):
            model_delete(model=up, user=world["alice"])
            model_delete(model=srv, user=world["alice"])
        assert not uploaded.exists() and served.is_dir()

    def test_a_running_job_on_the_model_blocks(self, world):
        model = model_entry_create(team=world["acme"])
        job_create(team=world["acme"], kind="evaluate", model=model, status=Job.Status.RUNNING)
        with pytest.raises(ApplicationError, match="cancel it"):
            model_delete(model=model, user=world["alice"])


class PairArtifactDatasetDeleteTests:
    def test_pair_with_artifacts_needs_with_artifacts(self, world, stocked, django_capture_on_commit_callbacks):
        with pytest.raises(ApplicationError, match="1 artifact still needs pair p"):
            pair_delete(pair=stocked["pair"], user=world["alice"])
        with django_capture_on_commit_callbacks(execute=True):
            pair_delete(pair=stocked["pair"], user=world["alice"], with_artifacts=True)
        assert not Pair.objects.exists() and not stocked["file"].exists()
        assert ModelEntry.objects.count() == 2  # the models stay

    def test_artifact_delete_frees_the_file_and_keeps_job_history(self, world, stocked,
                                                                  django_capture_on_commit_callbacks):
        job = job_create(team=world["acme"], kind="decompress", artifact=stocked["artifact"],
                         status=Job.Status.SUCCEEDED)
        with django_capture_on_commit_callbacks(execute=True):
            assert artifact_delete(artifact=stocked["artifact"], user=world["alice"])["bytes_freed"] == 3
        assert not stocked["file"].exists()
        job.refresh_from_db()
        assert job.artifact_id is None

    def test_dataset_upload_file_goes(self, world, dv_dirs, django_capture_on_commit_callbacks):
        folder = dv_dirs["home"] / "uploads" / "d"
        folder.mkdir(parents=True)
        (folder / "t.txt").write_text("hello")
        dataset = dataset_create(team=world["acme"], path=folder / "t.txt", source=Dataset.Source.UPLOAD,
                                 size_bytes=5)
        with pytest.raises(PermissionDenied):
            dataset_delete(dataset=dataset, user=world["mallory"])
        with django_capture_on_commit_callbacks(execute=True):
            assert dataset_delete(dataset=dataset, user=world["alice"]) == {"datasets": 1, "bytes_freed": 5}
        assert not folder.exists() and not Dataset.objects.exists()

    def test_other_teams_cannot(self, world, stocked):
        with pytest.raises(PermissionDenied):
            artifact_delete(artifact=stocked["artifact"], user=world["bob"])


class JobDeleteAndRestoredTests:
    def _restored(self, world, dv_dirs, *, hours_ago: float, pinned: bool = False) -> tuple[Job, os.PathLike]:
        job = job_create(team=world["acme"], kind="decompress", status=Job.Status.SUCCEEDED, pinned=pinned,
                         finished_at=timezone.now() - timedelta(hours=hours_ago))
        folder = dv_dirs["home"] / "restored" / str(job.pk)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 10)
        return job, folder

    def test_job_delete_removes_the_restored_copy_and_refuses_running_jobs(
            self, world, dv_dirs, django_capture_on_commit_callbacks):
        running = job_create(team=world["acme"], status=Job.Status.RUNNING)
        with pytest.raises(ApplicationError, match="cancel it first"):
            job_delete(job=running, user=world["alice"])
        job, folder = self._restored(world, dv_dirs, hours_ago=0)
        with pytest.raises(PermissionDenied):
            job_delete(job=job, user=world["mallory"])
        with django_capture_on_commit_callbacks(execute=True):
            job_delete(job=job, user=world["alice"])
        assert not Job.objects.filter(pk=job.pk).exists() and not folder.exists()

    def test_restored_copies_expire_pinned_ones_stay(self, world, dv_dirs, settings):
        settings.DELTAVAULT_RESTORED_TTL_HOURS = 24
        old, old_dir = self._restored(world, dv_dirs, hours_ago=25)
        fresh, fresh_dir = self._restored(world, dv_dirs, hours_ago=1)
        pinned, pinned_dir = self._restored(world, dv_dirs, hours_ago=100, pinned=True)
        orphan_dir = dv_dirs["home"] / "restored" / "999999"
        orphan_dir.mkdir()
        assert sorted(restored_expire()) == sorted([old.pk, 999999])
        assert not old_dir.exists() and not orphan_dir.exists()
        assert fresh_dir.exists() and pinned_dir.exists()
        old.refresh_from_db()
        assert "expired" in old.log_tail

    def test_pin_and_unpin(self, world, dv_dirs, settings):
        settings.DELTAVAULT_RESTORED_TTL_HOURS = 1
        job, folder = self._restored(world, dv_dirs, hours_ago=2)
        job_pin(job=job, user=world["mallory"], pinned=True)
        assert restored_expire() == [] and folder.exists()
        job_pin(job=job, user=world["mallory"], pinned=False)
        assert restored_expire() == [job.pk] and not folder.exists()
        with pytest.raises(ApplicationError):
            job_pin(job=job_create(team=world["acme"], kind="compress"), user=world["alice"])


class StorageSweepTests:
    def test_files_no_row_points_at_are_removed_once_old(self, world, stocked, dv_dirs):
        orphan = dv_dirs["artifacts"] / "acme" / "job-77-zstd.dvz"
        orphan.write_bytes(b"left")
        young = dv_dirs["artifacts"] / "acme" / "job-78-zstd.dvz"
        young.write_bytes(b"being stored")
        old = time.time() - 7200
        os.utime(orphan, (old, old))
        os.utime(stocked["file"], (old, old))
        assert artifact_storage_sweep() == ["acme/job-77-zstd.dvz"]
        assert stocked["file"].exists() and young.exists() and not orphan.exists()

    def test_the_periodic_task_runs_both(self, world, dv_dirs):
        result = housekeeping()
        assert result == {"restored_expired": [], "orphans_removed": [], "work_dirs_removed": [],
                          "model_copies_expired": [], "tensor_objects_removed": []}

    def test_scratch_folders_of_finished_or_missing_jobs_go_once_old(self, world, dv_dirs):
        tmp = dv_dirs["home"] / "tmp"
        running = job_create(team=world["acme"], status=Job.Status.RUNNING)
        failed = job_create(team=world["acme"], status=Job.Status.FAILED)
        young_failed = job_create(team=world["acme"], status=Job.Status.FAILED)
        folders = {name: tmp / f"job-{name}" for name in (running.pk, failed.pk, young_failed.pk, 999999)}
        old = time.time() - 7200
        for name, folder in folders.items():
            (folder / "partial").mkdir(parents=True)
            if name != young_failed.pk:
                os.utime(folder, (old, old))
        assert work_dirs_sweep() == sorted([f"job-{failed.pk}", "job-999999"])
        assert folders[running.pk].exists() and folders[young_failed.pk].exists()
        assert not folders[failed.pk].exists() and not folders[999999].exists()
