"""team_storage_breakdown and model_storage on a hand-built registry (tests/webapp/storage_world.py): exact bytes
per model (shared objects split evenly to the byte), per category, per codec and in total; other teams' rows never
count; the definitions the page shows are the docstring's."""

from datetime import timedelta

import pytest
from django.conf import settings

from tests.factories import model_entry_create, team_create
from tests.webapp.storage_world import (EXPECTED_CATEGORIES, EXPECTED_CODECS, EXPECTED_MODELS, EXPECTED_TOTALS,
                                        MODEL_COPY_USED, storage_world_build)
from webapp.registry.models import ModelEntry, StoredTensor, StoredTensorRef
from webapp.registry.storage import model_restored_cache
from webapp.registry.storage_selectors import STORAGE_DEFINITIONS, model_storage, team_storage_breakdown

pytestmark = pytest.mark.django_db


@pytest.fixture
def built(dv_dirs):
    team, other = team_create(), team_create()
    return team, storage_world_build(team=team, other=other)


class TeamStorageBreakdownTests:
    def test_models_carry_their_own_objects_and_an_even_share_of_shared_ones(self, built):
        team, _ = built
        rows = {m["name"]: m for m in team_storage_breakdown(team=team)["models"]}
        assert {name: (m["logical_bytes"], m["on_disk_bytes"], m["own_bytes"], m["shared_bytes"], m["held"])
                for name, m in rows.items()} == EXPECTED_MODELS
        assert (rows["a"]["tensors"], rows["a"]["shared_tensors"]) == (2, 1)
        assert (rows["c"]["tensors"], rows["c"]["shared_tensors"]) == (1, 1)
        assert rows["a"]["saved_bytes"] == 882 and rows["a"]["ratio"] == round(1000 / 118, 4)
        assert rows["e"]["ratio"] is None  # the user's folder: nothing on disk, no ratio
        assert rows["d"]["ratio"] == 1.0 and rows["d"]["saved_bytes"] == 0

    def test_categories_totals_and_codecs(self, built):
        team, _ = built
        view = team_storage_breakdown(team=team)
        assert {c["key"]: (c["items"], c["logical_bytes"], c["on_disk_bytes"])
                for c in view["categories"]} == EXPECTED_CATEGORIES
        assert {k: view["totals"][k] for k in EXPECTED_TOTALS} == EXPECTED_TOTALS
        assert view["totals"]["ratio"] == round(16864 / 10006, 4)
        assert {c["codec"]: (c["items"], c["logical_bytes"], c["on_disk_bytes"], c["ratio"])
                for c in view["codecs"]} == EXPECTED_CODECS

    def test_artifacts_gradient_sets_datasets_and_restored_copies(self, built):
        team, world = built
        view = team_storage_breakdown(team=team)
        assert [(a["codec"], a["logical_bytes"], a["on_disk_bytes"], a["pair_id"]) for a in view["artifacts"]] == [
            ("fmdelta", 700, 70, world["pair"].pk), ("zstd", 700, 560, world["pair"].pk)]
        g, h = view["gradient_sets"]
        assert (g["name"], g["held"], g["on_disk_bytes"]) == ("g", True, 5000)
        assert [(a["codec"], a["on_disk_bytes"]) for a in g["artifacts"]] == [("lmgc", 1000)]
        assert (h["name"], h["held"], h["on_disk_bytes"], h["artifacts"]) == ("h", False, 0, [])
        assert [(d["name"], d["held"], d["on_disk_bytes"]) for d in view["datasets"]] == [
            ("on-server", False, 0), ("uploaded", True, 1234)]
        decompressed, model_copy = view["restored"]
        job, ttl = world["restored"], timedelta(hours=settings.DELTAVAULT_RESTORED_TTL_HOURS)
        assert (decompressed["job_id"], decompressed["model_id"], decompressed["on_disk_bytes"]) == (job.pk, None, 700)
        assert decompressed["expires_at"] == job.finished_at + ttl
        assert (model_copy["job_id"], model_copy["model_id"], model_copy["on_disk_bytes"]) == (
            None, world["models"]["a"].pk, 500)
        assert model_copy["expires_at"] == MODEL_COPY_USED + ttl

    def test_a_copy_of_an_older_manifest_counts_until_the_sweep(self, built):
        team, world = built
        model = world["models"]["b"]
        stale = model_restored_cache(model).with_name(f"{model.pk}-{'0' * 16}")
        stale.mkdir(parents=True)
        (stale / "model.safetensors").write_bytes(b"\0" * 321)
        rows = [r for r in team_storage_breakdown(team=team)["restored"] if r["model_id"] == model.pk]
        assert [(r["on_disk_bytes"], r["expires_at"]) for r in rows] == [(321, None)]

    def test_model_storage_is_the_models_row_of_the_breakdown(self, built):
        team, world = built
        rows = {m["id"]: m for m in team_storage_breakdown(team=team)["models"]}
        for model in world["models"].values():
            assert model_storage(model=model) == rows[model.pk]

    def test_a_delete_moves_the_shared_object_to_the_models_left(self, built):
        team, world = built
        world["models"]["a"].delete()  # its refs go with it; t1 stays until the sweep, t2 is split in two
        rows = {m["name"]: m for m in team_storage_breakdown(team=team)["models"]}
        assert (rows["b"]["on_disk_bytes"], rows["c"]["on_disk_bytes"]) == (60 + 26, 26)
        view = team_storage_breakdown(team=team)
        unreferenced = next(c for c in view["categories"] if c["key"] == "unreferenced")
        assert unreferenced["on_disk_bytes"] == 30 + 100

    def test_an_empty_team(self, dv_dirs):
        view = team_storage_breakdown(team=team_create())
        assert view["models"] == [] and view["codecs"] == [] and view["restored"] == []
        assert view["totals"]["on_disk_bytes"] == 0 and view["totals"]["ratio"] is None
        assert all(c["items"] == 0 for c in view["categories"])

    def test_shares_add_up_to_the_object_for_any_number_of_models(self, dv_dirs):
        team = team_create()
        tensor = StoredTensor.objects.create(team=team, key="9" * 64, stored_bytes=1001, logical_bytes=4000)
        models = [model_entry_create(team=team, storage=ModelEntry.Storage.COMPRESSED, total_bytes=4000)
                  for _ in range(7)]
        for model in models:
            StoredTensorRef.objects.create(tensor=tensor, model=model)
        shares = [model_storage(model=m)["on_disk_bytes"] for m in models]
        assert shares == [143] * 7 and sum(shares) == 1001
        tensor.stored_bytes = 1005
        tensor.save()
        assert [model_storage(model=m)["shared_bytes"] for m in models] == [144] * 4 + [143] * 3


def test_the_page_shows_the_docstrings_definitions():
    doc = " ".join(team_storage_breakdown.__doc__.split())
    for term, meaning in STORAGE_DEFINITIONS:
        assert f"{term}: {' '.join(meaning.split())}" in doc
