"""Labelled datasets are validated at registration: a clear error naming the bad line, and no row left."""

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.core.exceptions import ApplicationError
from webapp.registry.models import Dataset
from webapp.registry.services import dataset_register_from_path, dataset_upload

pytestmark = pytest.mark.django_db


class LabelledDatasetTests:
    def test_register_a_labelled_csv(self, world, dv_dirs):
        (dv_dirs["acme"] / "reviews.csv").write_text("text,label\ngreat film,pos\nawful,neg\nfine,pos\n")
        dataset = dataset_register_from_path(team=world["acme"], user=world["alice"], name="reviews",
                                             path="reviews.csv", kind="labelled")
        assert dataset.kind == Dataset.Kind.LABELLED
        assert dataset.info == {"format": "csv", "rows": 3, "labels": {"neg": 1, "pos": 2}}

    @pytest.mark.parametrize("name, content, message", [
        ("a.csv", "text,sentiment\nx,pos\n", "line 1: the header has no 'label' column"),
        ("b.jsonl", '{"text": "x", "label": "pos"}\n{"text": "y"}\n', "line 2: no 'label' value"),
        ("c.csv", "text,label\nx,pos\ny,pos\n", "a single label"),
    ])
    def test_bad_labelled_files_are_refused_naming_the_line(self, world, dv_dirs, name, content, message):
        (dv_dirs["acme"] / name).write_text(content)
        with pytest.raises(ApplicationError, match=message):
            dataset_register_from_path(team=world["acme"], user=world["alice"], name="d", path=name,
                                       kind="labelled")
        assert not Dataset.objects.exists()

    def test_a_bad_labelled_upload_leaves_no_file_and_no_row(self, world, settings):
        with pytest.raises(ApplicationError, match="line 3"):
            dataset_upload(team=world["acme"], user=world["alice"], name="d", kind="labelled",
                           file=SimpleUploadedFile("d.jsonl", b'{"text": "a", "label": 1}\n'
                                                              b'{"text": "b", "label": 0}\nnot json\n'))
        assert not Dataset.objects.exists()
        assert not any(p.is_file() for p in Path(settings.DELTAVAULT_UPLOADS_DIR).rglob("*"))

    def test_unknown_kind_is_refused(self, world, dv_dirs):
        (dv_dirs["acme"] / "t.txt").write_text("hello\n")
        with pytest.raises(ApplicationError, match="Unknown dataset kind"):
            dataset_register_from_path(team=world["acme"], user=world["alice"], name="t", path="t.txt",
                                       kind="images")
