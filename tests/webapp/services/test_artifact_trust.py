"""An artifact can be trusted: one edited and fully re-sealed (its own crc32s and sha256s made to agree) is caught
on every restore path, by the hashes the registry recorded; and an artifact made with the CLI is imported only
after it is decoded and checked against the pair's fine-tuned model."""

from pathlib import Path
from unittest import mock

import modelcodecs
import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import dataset_create, pair_create, tiny_model_write
from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.services import job_run
from webapp.registry.models import Artifact
from webapp.registry.services import artifact_import

pytestmark = pytest.mark.django_db


def _compressed(world, pair) -> Artifact:
    job = job_run(job=Job.objects.create(team=world["acme"], created_by=world["alice"], kind="compress",
                                         pair=pair, codec_config={"id": "fmdelta"}))
    assert job.status == Job.Status.SUCCEEDED, job.error
    return Artifact.objects.get(job=job)


def _forge(pair, tmp_path: Path) -> Path:
    """A perfectly sealed artifact of another fine-tune of the pair's base, under the same file names: what an
    edited and re-sealed artifact is (every crc32, tensor and file sha256 and the index sha256 agree)."""
    other = tmp_path / "other-ft"
    tiny_model_write(other, seed=77)
    forged = tmp_path / "forged.dvz"
    modelcodecs.compress_model(other, forged, codec={"id": "fmdelta"}, base_dir=pair.base.path, threads=1)
    assert modelcodecs.verify_artifact(forged, base_dir=pair.base.path).ok  # its own hashes all agree
    return forged


def _swap_in(artifact: Artifact, forged: Path, dv_dirs, *, forget_file_hash: bool) -> None:
    (dv_dirs["artifacts"] / artifact.storage_name).write_bytes(forged.read_bytes())
    if forget_file_hash:  # as for artifacts stored before the registry recorded their file's sha256
        Artifact.objects.filter(pk=artifact.pk).update(sha256="")
        artifact.refresh_from_db()


def _dataset(world, dv_dirs):
    text = dv_dirs["acme"] / "eval.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 20)
    return dataset_create(team=world["acme"], path=text)


class RestoreTrustTests:
    def test_compress_records_the_artifact_files_sha256(self, world, pair, dv_dirs):
        from tests.factories import sha256_of

        artifact = _compressed(world, pair)
        assert artifact.sha256 == sha256_of(dv_dirs["artifacts"] / artifact.storage_name)

    @pytest.mark.parametrize("forget_file_hash", [False, True])
    def test_decompress_refuses_a_resealed_artifact(self, world, pair, dv_dirs, tmp_path, settings,
                                                    forget_file_hash):
        artifact = _compressed(world, pair)
        _swap_in(artifact, _forge(pair, tmp_path), dv_dirs, forget_file_hash=forget_file_hash)
        job = job_run(job=Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact))
        assert job.status == Job.Status.FAILED
        assert ("registry recorded" in job.error) != forget_file_hash
        assert forget_file_hash is False or "differ from the fine-tuned model" in job.error
        assert not (Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk)).exists()

    @pytest.mark.parametrize("forget_file_hash", [False, True])
    def test_evaluate_refuses_a_resealed_artifact(self, world, pair, dv_dirs, tmp_path, settings, forget_file_hash):
        artifact = _compressed(world, pair)
        _swap_in(artifact, _forge(pair, tmp_path), dv_dirs, forget_file_hash=forget_file_hash)
        job = Job.objects.create(team=world["acme"], kind="evaluate", artifact=artifact,
                                 dataset=_dataset(world, dv_dirs))
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", return_value={"perplexity": 1.0}) as ev:
            job = job_run(job=job)
        assert job.status == Job.Status.FAILED, job.log_tail
        assert not ev.called  # the forged model was never evaluated
        artifact.refresh_from_db()
        assert artifact.perplexity is None
        assert not any(Path(settings.DELTAVAULT_TMP_DIR).glob("*"))
        if forget_file_hash:
            assert artifact.verification == "failed"

    def test_an_untouched_artifact_still_restores_and_evaluates(self, world, pair, dv_dirs):
        artifact = _compressed(world, pair)
        job = Job.objects.create(team=world["acme"], kind="evaluate", artifact=artifact,
                                 dataset=_dataset(world, dv_dirs))
        with mock.patch("modelcodecs.evaluate.evaluate_perplexity", return_value={"perplexity": 3.5}):
            job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        artifact.refresh_from_db()
        assert artifact.verification == "verified" and artifact.perplexity == 3.5


def _upload(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile("made-with-cli.dvz", Path(path).read_bytes())


class ArtifactImportTests:
    def _cli_artifact(self, pair, tmp_path, codec="fmdelta") -> Path:
        out = tmp_path / "cli.dvz"
        modelcodecs.compress_model(pair.finetuned.path, out, codec={"id": codec}, base_dir=pair.base.path)
        return out

    @pytest.mark.parametrize("codec", ["fmdelta", "zstd"])
    def test_a_genuine_artifact_is_checked_and_accepted(self, world, pair, dv_dirs, tmp_path, codec):
        path = self._cli_artifact(pair, tmp_path, codec)
        artifact = artifact_import(team=world["acme"], user=world["mallory"], pair=pair, file=_upload(path))
        assert artifact.source == "import" and artifact.pair == pair and artifact.codec_id == codec
        assert artifact.verification == "verified" and artifact.verified_at
        stored = dv_dirs["artifacts"] / artifact.storage_name
        assert stored.read_bytes() == path.read_bytes()
        assert artifact.compressed_bytes == path.stat().st_size and artifact.ratio > 1
        from tests.factories import sha256_of

        assert artifact.sha256 == sha256_of(stored)
        # and it restores like any other artifact
        job = job_run(job=Job.objects.create(team=world["acme"], kind="decompress", artifact=artifact))
        assert job.status == Job.Status.SUCCEEDED, job.error

    def test_a_forged_artifact_is_refused_and_nothing_is_stored(self, world, pair, dv_dirs, tmp_path, settings):
        with pytest.raises(ApplicationError, match="does not restore the pair's fine-tuned model") as info:
            artifact_import(team=world["acme"], user=world["alice"], pair=pair, file=_upload(_forge(pair, tmp_path)))
        assert str(tmp_path) not in info.value.message
        assert not Artifact.objects.exists()
        assert not [p for p in dv_dirs["artifacts"].rglob("*") if p.is_file()]
        assert not [p for p in Path(settings.DELTAVAULT_TMP_DIR).rglob("*") if p.is_file()]

    def test_an_artifact_of_another_base_is_refused(self, world, pair, tmp_path):
        other_base = tmp_path / "other-base"
        tiny_model_write(other_base, seed=5)
        out = tmp_path / "x.dvz"
        modelcodecs.compress_model(pair.finetuned.path, out, codec={"id": "fmdelta"}, base_dir=other_base)
        with pytest.raises(ApplicationError, match="does not decode against the pair's base"):
            artifact_import(team=world["acme"], user=world["alice"], pair=pair, file=_upload(out))
        assert not Artifact.objects.exists()

    @pytest.mark.parametrize("content", [b"", b"not an artifact", b"DVZ\x00" + b"\x00" * 200])
    def test_garbage_is_refused(self, world, pair, content):
        with pytest.raises(ApplicationError, match="Not a DeltaVault artifact"):
            artifact_import(team=world["acme"], user=world["alice"], pair=pair,
                            file=SimpleUploadedFile("x.dvz", content))
        assert not Artifact.objects.exists()

    def test_viewers_and_other_teams_are_refused(self, world, pair, tmp_path):
        path = self._cli_artifact(pair, tmp_path)
        with pytest.raises(PermissionDenied):
            artifact_import(team=world["acme"], user=world["victor"], pair=pair, file=_upload(path))
        other_pair = pair_create(team=world["other"])
        with pytest.raises(ApplicationError, match="another team"):
            artifact_import(team=world["acme"], user=world["alice"], pair=other_pair, file=_upload(path))
        assert not Artifact.objects.exists()
