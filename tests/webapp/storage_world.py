"""A hand-built registry whose storage figures are worked out by hand below, shared by the storage breakdown's
selector, API and page tests.

Team ``team``:
- tensor store objects t1 (stored 100, logical 400), t2 (52, 300), t3 (60, 200), t4 (30, 90, no reference left);
- models stored compressed: a (1000 B, path; t1 + t2), b (800 B, upload; t2 + t3), c (500 B, path; t2). t2 is
  shared three ways: 52 = 18 + 17 + 17, the extra byte to the lowest id (a);
- folder models: d (700 B, uploaded, held), e (900 B, server path, not held);
- pair (base e, fine-tune d) with artifacts fmdelta 700 -> 70 and zstd 700 -> 560;
- gradient set g (upload, 5000 B) with an lmgc artifact 5000 -> 1000, gradient set h (server path, 3000 B);
- datasets: uploaded 1234 B, server path 99 B;
- a decompress job's restored copy of 700 B (finished now, so it expires in DELTAVAULT_RESTORED_TTL_HOURS), and
  a 500 B copy of model a restored for its readers, last used at ``MODEL_COPY_USED`` (expires that long after).
Team ``other`` holds a compressed model and a restored copy that must not count.
"""

from __future__ import annotations

import os
from datetime import datetime
from datetime import timezone as dt_timezone
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from tests.factories import artifact_create, model_entry_create, pair_create
from webapp.jobs.models import Job
from webapp.registry.models import Dataset, GradientSet, ModelEntry, StoredTensor, StoredTensorRef
from webapp.registry.storage import model_restored_cache

COMPRESSED, FOLDER = ModelEntry.Storage.COMPRESSED, ModelEntry.Storage.FOLDER
UPLOAD, PATH = ModelEntry.Source.UPLOAD, ModelEntry.Source.PATH

# what team_storage_breakdown must answer for ``team`` (worked out in the module docstring)
EXPECTED_MODELS = {  # name: (logical, on disk, own, shared, held)
    "a": (1000, 118, 100, 18, True), "b": (800, 77, 60, 17, True), "c": (500, 17, 0, 17, True),
    "d": (700, 700, 0, 0, True), "e": (900, 0, 0, 0, False),
}
EXPECTED_CATEGORIES = {  # key: (items, logical, on disk)
    "models-compressed": (3, 2300, 212), "models-uploaded": (1, 700, 700), "pair-artifacts": (2, 1400, 630),
    "gradient-sets": (1, 5000, 5000), "gradient-artifacts": (1, 5000, 1000), "datasets": (1, 1234, 1234),
    "restored": (2, 1200, 1200), "unreferenced": (1, 30, 30),
}
EXPECTED_TOTALS = {"logical_bytes": 16864, "on_disk_bytes": 10006, "saved_bytes": 6858, "shared_bytes": 52,
                   "store_objects": 4}
MODEL_COPY_USED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt_timezone.utc)
EXPECTED_CODECS = {  # codec: (items, logical, on disk, ratio)
    "fmdelta": (1, 700, 70, 10.0), "lmgc": (1, 5000, 1000, 5.0), "zstd": (1, 700, 560, 1.25),
    # refs' logical bytes 400 + 300 + 300 + 200 + 300 = 1500 for 900 distinct: 600 saved by keeping t2 once
    "store-dedup": (3, 2300, 1700, 1.3529), "store-coding": (3, 1700, 212, 8.0189),
}


def _write_copy(folder: Path, size: int) -> None:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * (size - 100))
    (folder / "config.json").write_bytes(b"{}" + b" " * 98)


def _restored_copy(team, size: int) -> Job:
    job = Job.objects.create(team=team, kind=Job.Kind.DECOMPRESS, status=Job.Status.SUCCEEDED,
                             finished_at=timezone.now())
    _write_copy(Path(settings.DELTAVAULT_RESTORED_DIR) / str(job.pk), size)
    return job


def storage_world_build(*, team, other) -> dict:
    objects = {name: StoredTensor.objects.create(team=team, key=name * 32, stored_bytes=stored, logical_bytes=logical)
               for name, stored, logical in (("1", 100, 400), ("2", 52, 300), ("3", 60, 200), ("4", 30, 90))}
    models = {}
    for name, size, source, storage, keys in (("a", 1000, PATH, COMPRESSED, "12"), ("b", 800, UPLOAD, COMPRESSED, "23"),
                                              ("c", 500, PATH, COMPRESSED, "2"), ("d", 700, UPLOAD, FOLDER, ""),
                                              ("e", 900, PATH, FOLDER, "")):
        models[name] = model_entry_create(team=team, name=name, total_bytes=size, source=source, storage=storage)
        for key in keys:
            StoredTensorRef.objects.create(tensor=objects[key], model=models[name])
    pair = pair_create(team=team, base=models["e"], finetuned=models["d"])
    artifacts = {codec: artifact_create(team=team, pair=pair, codec_id=codec, codec_config={"id": codec},
                                        original_bytes=700, compressed_bytes=size)
                 for codec, size in (("fmdelta", 70), ("zstd", 560))}
    gradients = GradientSet.objects.create(team=team, name="g", path="/uploads/g", source=UPLOAD, total_bytes=5000)
    GradientSet.objects.create(team=team, name="h", path="/srv/h", source=PATH, total_bytes=3000)
    artifacts["lmgc"] = artifact_create(team=team, gradient_set=gradients, codec_id="lmgc",
                                        codec_config={"id": "lmgc"}, original_bytes=5000, compressed_bytes=1000)
    Dataset.objects.create(team=team, name="uploaded", path="/uploads/t.txt", source=UPLOAD, size_bytes=1234,
                           sha256="0" * 64)
    Dataset.objects.create(team=team, name="on-server", path="/srv/t.txt", source=PATH, size_bytes=99,
                           sha256="0" * 64)
    restored = _restored_copy(team, 700)
    model_copy = model_restored_cache(models["a"])
    _write_copy(model_copy, 500)
    os.utime(model_copy, (MODEL_COPY_USED.timestamp(), MODEL_COPY_USED.timestamp()))

    foreign = StoredTensor.objects.create(team=other, key="f" * 64, stored_bytes=999, logical_bytes=9999)
    StoredTensorRef.objects.create(tensor=foreign, model=model_entry_create(team=other, total_bytes=9999,
                                                                            storage=COMPRESSED))
    _restored_copy(other, 4000)
    return {"models": models, "pair": pair, "artifacts": artifacts, "gradient_set": gradients, "restored": restored}
