"""Models stored compressed (issue 13 §3-4): a team's identical tensors are stored once and reference-counted;
a delete never removes a tensor another model needs, not under concurrent deletes, not after a crash in the middle
of one; compressed models are restored on demand for every job that reads them."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
from django.db import connection, transaction
from safetensors.numpy import save_file

from tests.factories import sha256_of, tiny_model_write
from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_run
from webapp.registry.models import ModelEntry, StoredTensor, StoredTensorRef
from webapp.registry.selectors import model_stored_bytes
from webapp.registry.services import (artifact_storage_sweep, model_delete, model_register_from_path,
                                      model_restored_expire, model_store_commit, pair_create, tensor_store_sweep)
from webapp.registry.storage import model_local_folder, model_restored_cache, tensor_store_root

pytestmark = pytest.mark.django_db


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _frozen_finetune(folder: Path, base_dir: Path, base: dict, changed: tuple[str, ...]) -> dict:
    """A fine-tune of ``base`` that trained only ``changed`` (the other tensors, and the config, are the base's
    bit for bit)."""
    tensors = {name: (value + 0.01).astype(value.dtype) if name in changed else value
               for name, value in base.items()}
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copy(base_dir / "config.json", folder / "config.json")
    return tensors


@pytest.fixture
def models(world, dv_dirs):
    """acme's base and a fine-tune of it with frozen layers (two tensors trained), registered from paths."""
    base_dir, ft_dir = dv_dirs["acme"] / "base", dv_dirs["acme"] / "ft"
    base = tiny_model_write(base_dir, seed=1)
    _frozen_finetune(ft_dir, base_dir, base, ("model.norm.weight", "model.layers.0.mlp.up_proj.weight"))
    register = lambda name, path: model_register_from_path(  # noqa: E731
        team=world["acme"], user=world["alice"], name=name, path=str(path))
    return {"base": register("base", base_dir), "ft": register("ft", ft_dir), "base_dir": base_dir,
            "ft_dir": ft_dir, "base_tensors": base}


def _store(world, model: ModelEntry) -> Job:
    job = Job.objects.create(team=model.team, created_by=world["alice"], kind=Job.Kind.STORE, model=model)
    job = job_run(job=job)
    assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
    model.refresh_from_db()
    return job


def _object_keys(team_id: int) -> set[str]:
    objects = tensor_store_root(team_id) / "objects"
    return {p.name for p in objects.rglob("*") if p.is_file()} if objects.exists() else set()


def _row_keys(team_id: int) -> set[str]:
    return set(StoredTensor.objects.filter(team_id=team_id).values_list("key", flat=True))


def _delete(world, model, callbacks_runner):
    with callbacks_runner(execute=True):
        return model_delete(model=model, user=world["alice"])


class StoreJobTests:
    def test_store_job_records_the_model_and_reports_live_progress(self, world, models):
        job = _store(world, models["base"])
        base = models["base"]
        assert base.storage == ModelEntry.Storage.COMPRESSED and base.store_manifest["files"]
        assert job.progress == 100
        assert job.metrics["logical_bytes"] == base.total_bytes
        assert job.metrics["written_bytes"] > 0 and job.metrics["deduplicated_bytes"] == 0
        assert job.metrics["tensors"] == base.tensor_count
        assert "storing model.safetensors" in job.log_tail
        keys = _row_keys(base.team_id)
        assert keys == _object_keys(base.team_id)
        assert StoredTensorRef.objects.filter(model=base).count() == len(keys)
        assert model_stored_bytes(model=base)["stored_bytes"] == sum(
            StoredTensor.objects.values_list("stored_bytes", flat=True))
        assert Path(base.path).is_dir()  # a path-registered model keeps the user's folder

    def test_the_live_figures_count_tensors_and_bytes(self, world, models):
        job = Job.objects.create(team=world["acme"], created_by=world["alice"], kind=Job.Kind.STORE,
                                 model=models["base"])
        seen = []
        from webapp.jobs.reporter import JobReporter

        original = JobReporter.partial
        with mock.patch.object(JobReporter, "partial", autospec=True,
                               side_effect=lambda self, which, scores: (seen.append((which, scores)),
                                                                        original(self, which, scores))):
            job_run(job=job)
        assert seen and all(which == "store" for which, _ in seen)
        assert seen[-1][1]["tensors_done"] == seen[-1][1]["tensors_total"] == models["base"].tensor_count
        assert seen[-1][1]["written_bytes"] > 0

    def test_a_second_model_writes_only_its_new_tensors(self, world, models):
        _store(world, models["base"])
        first_keys = _row_keys(world["acme"].pk)
        job = _store(world, models["ft"])
        new_keys = _row_keys(world["acme"].pk) - first_keys
        assert len(new_keys) == 2  # the two trained tensors; header, config and frozen layers are shared
        frozen = {k: v for k, v in models["base_tensors"].items()
                  if k not in ("model.norm.weight", "model.layers.0.mlp.up_proj.weight")}
        assert job.metrics["deduplicated_bytes"] >= sum(v.nbytes for v in frozen.values())
        assert job.metrics["new_objects"] == 2
        shared = StoredTensor.objects.filter(key__in=first_keys & set(
            StoredTensorRef.objects.filter(model=models["ft"]).values_list("tensor__key", flat=True)))
        assert shared.count() == len(first_keys) - 2
        assert all(t.refs.count() == 2 for t in shared)

    def test_a_re_upload_writes_nothing(self, world, models, dv_dirs):
        _store(world, models["base"])
        copy = dv_dirs["acme"] / "base-again"
        shutil.copytree(models["base_dir"], copy)
        again = model_register_from_path(team=world["acme"], user=world["alice"], name="again", path=str(copy))
        job = _store(world, again)
        assert job.metrics["written_bytes"] == 0 and job.metrics["new_objects"] == 0
        assert model_stored_bytes(model=again)["unique_stored_bytes"] == 0

    def test_never_shared_across_teams(self, world, models, dv_dirs):
        other_dir = dv_dirs["root"] / "other" / "base"
        shutil.copytree(models["base_dir"], other_dir)
        theirs = model_register_from_path(team=world["other"], user=world["bob"], name="base",
                                          path=str(other_dir))
        _store(world, models["base"])
        job = Job.objects.create(team=world["other"], created_by=world["bob"], kind=Job.Kind.STORE, model=theirs)
        job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED and job.metrics["deduplicated_bytes"] == 0
        assert _row_keys(world["acme"].pk) == _row_keys(world["other"].pk) == _object_keys(world["other"].pk)
        assert tensor_store_root(world["acme"].pk) != tensor_store_root(world["other"].pk)

    def test_changed_files_fail_the_job_and_store_nothing(self, world, models):
        (models["base_dir"] / "config.json").write_text('{"changed": true}')
        job = Job.objects.create(team=world["acme"], created_by=world["alice"], kind=Job.Kind.STORE,
                                 model=models["base"])
        job = job_run(job=job)
        assert job.status == Job.Status.FAILED and "changed on disk" in job.error
        assert not StoredTensor.objects.exists()

    def test_an_uploaded_model_loses_its_folder_once_stored_and_restores_byte_exact(
            self, world, models, django_capture_on_commit_callbacks):
        from django.core.files.uploadedfile import SimpleUploadedFile

        from webapp.registry.services import model_register_upload

        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(models["base_dir"].iterdir())]
        uploaded = model_register_upload(team=world["acme"], user=world["alice"], name="up", files=files)
        folder = Path(uploaded.path)
        with django_capture_on_commit_callbacks(execute=True):
            _store(world, uploaded)
        assert not folder.exists()
        restored = model_local_folder(uploaded)
        assert restored == model_restored_cache(uploaded)
        assert _tree(restored) == _tree(models["base_dir"])


class RestoreOnDemandTests:
    def test_path_model_is_read_in_place_until_its_folder_changes(self, world, models):
        _store(world, models["base"])
        base = models["base"]
        assert model_local_folder(base) == models["base_dir"]
        shutil.rmtree(models["base_dir"])
        restored = model_local_folder(base)
        assert restored == model_restored_cache(base) and restored.is_dir()
        assert model_local_folder(base) == restored  # reused, not restored twice

    def test_jobs_work_on_compressed_models_whose_folders_are_gone(self, world, models):
        pair = pair_create(team=world["acme"], user=world["alice"], name="p", base=models["base"],
                           finetuned=models["ft"])
        original = _tree(models["ft_dir"])
        for model in (models["base"], models["ft"]):
            _store(world, model)
        shutil.rmtree(models["base_dir"])
        shutil.rmtree(models["ft_dir"])
        job = job_run(job=Job.objects.create(team=world["acme"], created_by=world["alice"], kind="compress",
                                             pair=pair, codec_config={"id": "fmdelta"}))
        assert job.status == Job.Status.SUCCEEDED, job.error
        assert "restoring model base from the tensor store" in job.log_tail
        assert "restoring model ft from the tensor store" in job.log_tail
        decompress = job_run(job=Job.objects.create(team=world["acme"], created_by=world["alice"],
                                                    kind="decompress", artifact=job.output_artifact))
        assert decompress.status == Job.Status.SUCCEEDED, decompress.error
        assert _tree(Path(decompress.metrics["output_dir"])) == original

    def test_restored_copies_expire_unless_a_job_uses_the_model(self, world, models, settings):
        _store(world, models["base"])
        shutil.rmtree(models["base_dir"])
        copy = model_local_folder(models["base"])
        later = time.time() + settings.DELTAVAULT_RESTORED_TTL_HOURS * 3600 + 60
        job = Job.objects.create(team=world["acme"], created_by=world["alice"], kind="evaluate",
                                 model=models["base"])
        assert model_restored_expire(now=later) == [] and copy.is_dir()
        Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
        assert model_restored_expire(now=time.time()) == [] and copy.is_dir()  # still fresh
        assert model_restored_expire(now=later) == [copy.name] and not copy.exists()
        assert model_local_folder(models["base"]) == copy  # restored again on demand

    def test_a_missing_object_fails_the_restore_with_the_tensor_named(self, world, models):
        _store(world, models["base"])
        shutil.rmtree(models["base_dir"])
        segment = next(s for f in models["base"].store_manifest["files"] for s in f["segments"]
                       if s.get("tensor") == "model.norm.weight")
        from modelcodecs.tensorstore import object_path

        object_path(tensor_store_root(world["acme"].pk), segment["key"]).unlink()
        with pytest.raises(ApplicationError, match="'model.norm.weight' of model.safetensors.*missing"):
            model_local_folder(models["base"])
        assert not model_restored_cache(models["base"]).exists()


class RefcountedDeleteTests:
    def test_delete_keeps_what_another_model_needs(self, world, models, django_capture_on_commit_callbacks):
        _store(world, models["base"])
        _store(world, models["ft"])
        ft_keys = set(StoredTensorRef.objects.filter(model=models["ft"]).values_list("tensor__key", flat=True))
        base_only = _row_keys(world["acme"].pk) - ft_keys
        summary = _delete(world, models["base"], django_capture_on_commit_callbacks)
        assert len(base_only) == 2 and summary["bytes_freed"] > 0
        assert _row_keys(world["acme"].pk) == ft_keys == _object_keys(world["acme"].pk)
        original = _tree(models["ft_dir"])
        shutil.rmtree(models["ft_dir"])
        assert _tree(model_local_folder(models["ft"])) == original
        _delete(world, models["ft"], django_capture_on_commit_callbacks)
        assert _row_keys(world["acme"].pk) == set() == _object_keys(world["acme"].pk)

    def test_bytes_freed_are_the_objects_no_other_model_needs(self, world, models,
                                                              django_capture_on_commit_callbacks):
        _store(world, models["base"])
        _store(world, models["ft"])
        unique = model_stored_bytes(model=models["base"])["unique_stored_bytes"]
        assert unique > 0
        summary = _delete(world, models["base"], django_capture_on_commit_callbacks)
        assert summary["bytes_freed"] == unique

    def test_a_crash_before_commit_changes_nothing(self, world, models, django_capture_on_commit_callbacks):
        _store(world, models["base"])
        _store(world, models["ft"])
        rows, files, refs = _row_keys(world["acme"].pk), _object_keys(world["acme"].pk), StoredTensorRef.objects.count()
        with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError):
            with transaction.atomic():
                model_delete(model=models["base"], user=world["alice"])
                raise RuntimeError("worker killed before the commit")
        assert _row_keys(world["acme"].pk) == rows and _object_keys(world["acme"].pk) == files
        assert StoredTensorRef.objects.count() == refs

    def test_a_crash_after_commit_leaves_orphans_the_sweep_removes(self, world, models,
                                                                  django_capture_on_commit_callbacks):
        _store(world, models["base"])
        _store(world, models["ft"])
        with mock.patch("modelcodecs.tensorstore.remove_objects", side_effect=OSError("killed")):
            _delete(world, models["base"], django_capture_on_commit_callbacks)
        left = _object_keys(world["acme"].pk) - _row_keys(world["acme"].pk)
        assert len(left) == 2  # rows gone, files not
        assert tensor_store_sweep() == []  # too young: a running store writes objects before its rows
        assert tensor_store_sweep(min_age_s=0) == sorted(f"{world['acme'].pk}/{k}" for k in left)
        assert _object_keys(world["acme"].pk) == _row_keys(world["acme"].pk)
        original = _tree(models["ft_dir"])
        shutil.rmtree(models["ft_dir"])
        assert _tree(model_local_folder(models["ft"])) == original  # nothing it needs went

    def test_the_sweep_leaves_a_team_with_a_store_in_flight(self, world, models):
        root = tensor_store_root(world["acme"].pk)
        stray = root / "objects" / "ab" / ("ab" + "0" * 62)
        stray.parent.mkdir(parents=True)
        stray.write_bytes(b"written by a store job still running")
        job = Job.objects.create(team=world["acme"], kind=Job.Kind.STORE, model=models["base"],
                                 status=Job.Status.RUNNING)
        assert tensor_store_sweep(min_age_s=0) == [] and stray.exists()
        Job.objects.filter(pk=job.pk).update(status=Job.Status.FAILED)
        assert tensor_store_sweep(min_age_s=0) == [f"{world['acme'].pk}/{stray.name}"]

    def test_rows_no_model_refers_to_are_swept_with_their_files(self, world, models):
        _store(world, models["base"])
        StoredTensorRef.objects.filter(model=models["base"]).delete()  # as a bug or a manual edit would leave it
        removed = tensor_store_sweep()
        assert len(removed) == len(_row_keys(world["acme"].pk) | {r.split("/")[1] for r in removed})
        assert not StoredTensor.objects.exists() and _object_keys(world["acme"].pk) == set()

    def test_a_deleted_team_s_store_goes_with_the_sweep(self, world, models):
        _store(world, models["base"])
        folder = tensor_store_root(world["acme"].pk)
        world["acme"].delete()  # the admin site's cascade: models, refs and rows together
        assert not StoredTensor.objects.exists() and not StoredTensorRef.objects.exists()
        assert tensor_store_sweep(min_age_s=0) == [f"{folder.name}/*"] and not folder.exists()

    def test_the_artifact_sweep_leaves_the_tensor_store_alone(self, world, models, dv_dirs):
        _store(world, models["base"])
        old = time.time() - 7200
        for path in (dv_dirs["artifacts"] / "tensors").rglob("*"):
            os.utime(path, (old, old))
        assert artifact_storage_sweep() == []
        assert _object_keys(world["acme"].pk) == _row_keys(world["acme"].pk)

    def test_a_store_reusing_an_object_a_delete_just_removed_writes_it_again(self, world, models,
                                                                             django_capture_on_commit_callbacks):
        """The store saw the object on disk (and skipped it); a delete of the only other model that needed it
        commits and removes the file before the store records its refs: the commit writes it again."""
        from modelcodecs.tensorstore import store_model

        _store(world, models["base"])
        root = tensor_store_root(world["acme"].pk)
        summary = store_model(models["ft_dir"], root)
        assert summary.new_keys  # the two trained tensors; everything else was reused
        _delete(world, models["base"], django_capture_on_commit_callbacks)
        assert not set(summary.objects) <= _object_keys(world["acme"].pk)
        ft = model_store_commit(model=models["ft"], summary=summary,
                                rewrite_missing=lambda keys: store_model(models["ft_dir"], root, rewrite=keys))
        assert _object_keys(world["acme"].pk) == _row_keys(world["acme"].pk) == set(summary.objects)
        original = _tree(models["ft_dir"])
        shutil.rmtree(models["ft_dir"])
        assert model_local_folder(ft) == model_restored_cache(ft)
        assert _tree(model_local_folder(ft)) == original


@pytest.mark.django_db(transaction=True)
class ConcurrentDeleteTests:
    """Two deletes of models that share tensors, at once, each on its own connection (PostgreSQL row locks; on
    SQLite, transactions are serialised)."""

    def test_concurrent_deletes_leave_exactly_the_objects_still_needed(self, world, dv_dirs):
        base = tiny_model_write(dv_dirs["acme"] / "base", seed=1)
        folders = {"base": dv_dirs["acme"] / "base"}
        for i, changed in enumerate([("model.norm.weight",), ("model.layers.0.mlp.up_proj.weight",),
                                     ("model.layers.0.mlp.down_proj.weight",)]):
            folders[f"ft{i}"] = dv_dirs["acme"] / f"ft{i}"
            _frozen_finetune(folders[f"ft{i}"], folders["base"], base, changed)
        models = {name: model_register_from_path(team=world["acme"], user=world["alice"], name=name,
                                                 path=str(path)) for name, path in folders.items()}
        for model in models.values():
            _store(world, model)
        keep = models["ft2"]
        needed = set(StoredTensorRef.objects.filter(model=keep).values_list("tensor__key", flat=True))
        errors, barrier = [], threading.Barrier(3)

        def delete(model):
            try:
                barrier.wait(timeout=30)
                model_delete(model=ModelEntry.objects.get(pk=model.pk), user=world["alice"])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=delete, args=(models[name],)) for name in ("base", "ft0", "ft1")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert _row_keys(world["acme"].pk) == needed == _object_keys(world["acme"].pk)
        assert set(StoredTensorRef.objects.values_list("model_id", flat=True)) == {keep.pk}
        original = _tree(folders["ft2"])
        shutil.rmtree(folders["ft2"])
        assert _tree(model_local_folder(ModelEntry.objects.get(pk=keep.pk))) == original
