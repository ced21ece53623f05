import os
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import model_entry_create, sha256_of, tiny_model_write
from webapp.core.exceptions import ApplicationError
from webapp.registry.models import Dataset, ModelEntry, Pair
from webapp.registry.services import (
    dataset_register_from_path,
    dataset_upload,
    model_register_from_path,
    model_register_upload,
    pair_create,
)

pytestmark = pytest.mark.django_db


def _upload_files(folder: Path) -> list[SimpleUploadedFile]:
    return [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


class ModelRegisterFromPathTests:
    def test_registers_the_folder_with_its_info(self, world, tiny_pair_dirs):
        base_dir, _ = tiny_pair_dirs
        entry = model_register_from_path(team=world["acme"], user=world["mallory"], name="base",
                                         path=str(base_dir))
        assert entry.path == str(base_dir.resolve()) and entry.source == "path"
        assert entry.layout == "safetensors" and entry.architecture == "TinyForCausalLM"
        assert entry.tensor_count == 4 and entry.parameter_count == 64 * 32 + 48 * 32 + 32 * 48 + 32
        assert entry.dtypes == {"F32": 3, "F16": 1}
        by_name = {f["name"]: f for f in entry.files}
        assert by_name["model.safetensors"]["sha256"] == sha256_of(base_dir / "model.safetensors")
        assert entry.total_bytes == sum(p.stat().st_size for p in base_dir.iterdir())

    def test_relative_paths_are_taken_inside_the_first_root(self, world, tiny_pair_dirs):
        entry = model_register_from_path(team=world["acme"], user=world["alice"], name="b", path="tiny-base")
        assert entry.path == str(tiny_pair_dirs[0].resolve())

    @pytest.mark.parametrize("make_path, message", [
        (lambda root, tmp: str(tmp / "outside"), "not inside your team's folders"),
        (lambda root, tmp: str(root / ".." / "outside"), "'..'"),
        (lambda root, tmp: "../outside", "'..'"),
        (lambda root, tmp: str(root / "escape-link"), "not inside your team's folders"),
        (lambda root, tmp: str(root / "nope"), "does not exist"),
        (lambda root, tmp: str(root / "file.txt"), "not a folder"),
        (lambda root, tmp: "", "required"),
    ])
    def test_bad_paths_are_refused(self, world, dv_dirs, make_path, message):
        root, tmp = dv_dirs["acme"], dv_dirs["home"]
        tiny_model_write(tmp / "outside")
        os.symlink(tmp / "outside", root / "escape-link")
        (root / "file.txt").write_text("x")
        with pytest.raises(ApplicationError, match=message):
            model_register_from_path(team=world["acme"], user=world["alice"], name="m",
                                     path=make_path(root, tmp))
        assert not ModelEntry.objects.exists()

    def test_a_symlink_that_stays_inside_the_roots_is_fine(self, world, tiny_pair_dirs, dv_dirs):
        os.symlink(tiny_pair_dirs[0], dv_dirs["acme"] / "alias")
        entry = model_register_from_path(team=world["acme"], user=world["alice"], name="m",
                                         path=str(dv_dirs["acme"] / "alias"))
        assert entry.path == str(tiny_pair_dirs[0].resolve())

    def test_a_folder_without_a_model_is_refused_clearly(self, world, dv_dirs):
        (dv_dirs["acme"] / "empty").mkdir()
        with pytest.raises(ApplicationError, match="Not a model folder"):
            model_register_from_path(team=world["acme"], user=world["alice"], name="m",
                                     path=str(dv_dirs["acme"] / "empty"))
        assert not ModelEntry.objects.exists()

    def test_duplicate_names_and_viewers_are_refused(self, world, tiny_pair_dirs):
        model_register_from_path(team=world["acme"], user=world["alice"], name="m", path="tiny-base")
        with pytest.raises(ApplicationError, match="already has a model named"):
            model_register_from_path(team=world["acme"], user=world["alice"], name="m", path="tiny-ft")
        with pytest.raises(PermissionDenied):
            model_register_from_path(team=world["acme"], user=world["victor"], name="v", path="tiny-ft")
        assert ModelEntry.objects.count() == 1


class ModelRegisterUploadTests:
    def test_upload_stores_the_files_under_the_team_and_registers(self, world, tiny_pair_dirs, settings):
        base_dir, _ = tiny_pair_dirs
        entry = model_register_upload(team=world["acme"], user=world["alice"], name="Up/loaded model",
                                      files=_upload_files(base_dir))
        folder = Path(entry.path)
        assert folder.parent == Path(settings.DELTAVAULT_UPLOADS_DIR) / "acme" / "models"
        assert entry.source == "upload" and entry.tensor_count == 4
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
        assert sha256_of(folder / "model.safetensors") == sha256_of(base_dir / "model.safetensors")

    @pytest.mark.parametrize("name", ["model.bin", "pytorch_model.pt", "evil.pkl", "run.sh", ".hidden.json"])
    def test_disallowed_file_types_are_refused(self, world, tiny_pair_dirs, settings, name):
        files = _upload_files(tiny_pair_dirs[0]) + [SimpleUploadedFile(name, b"\x80\x04payload")]
        with pytest.raises(ApplicationError, match="not accepted"):
            model_register_upload(team=world["acme"], user=world["alice"], name="m", files=files)
        assert not ModelEntry.objects.exists()
        assert not Path(settings.DELTAVAULT_UPLOADS_DIR).exists() or not any(
            Path(settings.DELTAVAULT_UPLOADS_DIR).rglob("*.*"))

    def test_file_names_are_sanitised(self, world, tiny_pair_dirs):
        files = _upload_files(tiny_pair_dirs[0])
        files[0].name = "../../../etc/config.json"
        entry = model_register_upload(team=world["acme"], user=world["alice"], name="m", files=files)
        assert (Path(entry.path) / "config.json").is_file()

    def test_size_limit(self, world, tiny_pair_dirs, settings):
        settings.DELTAVAULT_MAX_UPLOAD_BYTES = 100
        with pytest.raises(ApplicationError, match="limit"):
            model_register_upload(team=world["acme"], user=world["alice"], name="m",
                                  files=_upload_files(tiny_pair_dirs[0]))
        assert not ModelEntry.objects.exists()

    def test_unreadable_weights_leave_nothing_behind(self, world, settings):
        files = [SimpleUploadedFile("model.safetensors", b"garbage"), SimpleUploadedFile("config.json", b"{}")]
        with pytest.raises(ApplicationError):
            model_register_upload(team=world["acme"], user=world["alice"], name="m", files=files)
        assert not ModelEntry.objects.exists()
        uploads = Path(settings.DELTAVAULT_UPLOADS_DIR)
        assert not uploads.exists() or not [p for p in uploads.rglob("*") if p.is_file()]

    def test_needs_a_safetensors_file(self, world):
        with pytest.raises(ApplicationError, match="no \\*.safetensors"):
            model_register_upload(team=world["acme"], user=world["alice"], name="m",
                                  files=[SimpleUploadedFile("config.json", b"{}")])


class PairCreateTests:
    def test_pair_of_compatible_models_stores_the_report(self, world, tiny_pair_dirs):
        team, user = world["acme"], world["alice"]
        base = model_register_from_path(team=team, user=user, name="base", path="tiny-base")
        ft = model_register_from_path(team=team, user=user, name="ft", path="tiny-ft")
        pair = pair_create(team=team, user=user, name="p", base=base, finetuned=ft)
        assert pair.report["compatible"] is True and pair.report["shared"] == 4

    def test_incompatible_models_are_refused_with_the_report(self, world, dv_dirs):
        team, user = world["acme"], world["alice"]
        tiny_model_write(dv_dirs["acme"] / "a", seed=1)
        tiny_model_write(dv_dirs["acme"] / "b", seed=2, shapes={"other.weight": ((8, 8), "float32")})
        a = model_register_from_path(team=team, user=user, name="a", path="a")
        b = model_register_from_path(team=team, user=user, name="b", path="b")
        with pytest.raises(ApplicationError, match="not a fine-tune") as info:
            pair_create(team=team, user=user, name="p", base=a, finetuned=b)
        assert info.value.extra["report"]["compatible"] is False
        assert not Pair.objects.exists()

    def test_models_of_another_team_or_the_same_model_are_refused(self, world):
        mine = model_entry_create(team=world["acme"])
        theirs = model_entry_create(team=world["other"])
        with pytest.raises(ApplicationError, match="belong to the team"):
            pair_create(team=world["acme"], user=world["alice"], name="p", base=mine, finetuned=theirs)
        with pytest.raises(ApplicationError, match="different"):
            pair_create(team=world["acme"], user=world["alice"], name="p", base=mine, finetuned=mine)
        assert not Pair.objects.exists()


class DatasetTests:
    def test_register_a_text_file_from_a_path(self, world, dv_dirs):
        text = dv_dirs["acme"] / "wiki.txt"
        text.write_text("hello world\n" * 10)
        dataset = dataset_register_from_path(team=world["acme"], user=world["alice"], name="wiki",
                                             path="wiki.txt")
        assert dataset.size_bytes == 120 and dataset.sha256 == sha256_of(text)

    def test_binary_files_are_refused(self, world, dv_dirs):
        (dv_dirs["acme"] / "blob.txt").write_bytes(b"\x00\x01\x02")
        with pytest.raises(ApplicationError, match="not a text file"):
            dataset_register_from_path(team=world["acme"], user=world["alice"], name="b", path="blob.txt")
        assert not Dataset.objects.exists()

    def test_upload(self, world, settings):
        dataset = dataset_upload(team=world["acme"], user=world["mallory"], name="notes",
                                 file=SimpleUploadedFile("notes.txt", "héllo\n".encode()))
        assert Path(dataset.path).read_text() == "héllo\n"
        assert Path(dataset.path).is_relative_to(Path(settings.DELTAVAULT_UPLOADS_DIR) / "acme")

    @pytest.mark.parametrize("name, content", [("x.exe", b"MZ"), ("data.txt", b"\xff\xfe\x00bad")])
    def test_upload_refuses_non_text(self, world, name, content):
        with pytest.raises(ApplicationError):
            dataset_upload(team=world["acme"], user=world["alice"], name="d",
                           file=SimpleUploadedFile(name, content))
        assert not Dataset.objects.exists()
