"""What a team's registry holds, byte by byte: the storage breakdown behind the team Storage page and
``GET /api/v1/storage/``.

Kept apart from ``selectors.py`` because it reads every app's rows (models and their tensor-store objects,
artifacts, gradient sets, datasets, and restored copies), not one entity's.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from django.conf import settings
from django.db.models import Count, Sum

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_restored_expires_at
from webapp.registry.models import Artifact, Dataset, GradientSet, ModelEntry, StoredTensor, StoredTensorRef
from webapp.registry.storage import model_restored_cache
from webapp.teams.models import Team

# The definitions the breakdown's figures follow, shown on the Storage page and returned by the API. The docstring
# of ``team_storage_breakdown`` says the same (a test keeps the two equal).
STORAGE_DEFINITIONS = (
    ("logical bytes", "the size of the files an item stands for, stored plainly: a model's registered files, an "
                      "artifact's original (the fine-tune or gradient files it restores), a dataset's file, a "
                      "restored copy's files."),
    ("bytes on disk", "what the registry itself keeps for the item: a model stored compressed, its share of the "
                      "tensor-store objects it references (an object several models reference is split evenly "
                      "between them); an uploaded folder, its files; an artifact, its file; a restored copy, its "
                      "files. A folder registered from a server path is the user's, not the registry's: 0 bytes "
                      "on disk, listed but left out of the totals."),
    ("saved", "logical bytes minus bytes on disk."),
    ("ratio", "original bytes / bytes needed besides the base, i.e. logical bytes / bytes on disk (an artifact: "
              "original bytes / compressed bytes); none when nothing is on disk."),
    ("shared", "bytes on disk of tensor-store objects that more than one model references; each such model "
               "carries an even share of them."),
)

# a model's part of the tensor store when it references no object
NO_SHARE = {"own": 0, "shared": 0, "tensors": 0, "shared_tensors": 0}


def _ratio(logical: int, on_disk: int) -> float | None:
    return round(logical / on_disk, 4) if on_disk > 0 else None


def _sizes(*, logical: int, on_disk: int, held: bool = True) -> dict:
    return {"held": held, "logical_bytes": logical, "on_disk_bytes": on_disk, "saved_bytes": logical - on_disk,
            "ratio": _ratio(logical, on_disk)}


def _even_shares(refs: list[tuple[int, int, int]]) -> dict[int, dict[str, int]]:
    """Split each object's stored bytes evenly between the models that reference it, in whole bytes: the first
    ``stored % n`` models (by id) carry one byte more, so the shares add up to the object exactly.
    ``refs`` are (model id, tensor id, stored bytes). Returns per model: own, shared, tensors, shared_tensors."""
    models_of: dict[int, list[int]] = defaultdict(list)
    stored_of: dict[int, int] = {}
    for model_id, tensor_id, stored in refs:
        models_of[tensor_id].append(model_id)
        stored_of[tensor_id] = stored
    shares: dict[int, dict[str, int]] = defaultdict(lambda: dict(NO_SHARE))
    for tensor_id, model_ids in models_of.items():
        stored, n = stored_of[tensor_id], len(model_ids)
        for index, model_id in enumerate(sorted(model_ids)):
            share = shares[model_id]
            share["tensors"] += 1
            if n == 1:
                share["own"] += stored
            else:
                share["shared"] += stored // n + (1 if index < stored % n else 0)
                share["shared_tensors"] += 1
    return shares


def _model_row(model: ModelEntry, share: dict[str, int]) -> dict:
    if model.storage == ModelEntry.Storage.COMPRESSED:
        sizes = _sizes(logical=model.total_bytes, on_disk=share["own"] + share["shared"])
    elif model.source == ModelEntry.Source.UPLOAD:
        sizes = _sizes(logical=model.total_bytes, on_disk=model.total_bytes)
    else:
        sizes = _sizes(logical=model.total_bytes, on_disk=0, held=False)
    return {"id": model.pk, "name": model.name, "storage": model.storage, "source": model.source, **sizes,
            "own_bytes": share["own"], "shared_bytes": share["shared"], "tensors": share["tensors"],
            "shared_tensors": share["shared_tensors"]}


def _ref_rows(refs) -> list[tuple[int, int, int, int]]:
    """(model id, tensor id, stored bytes, logical bytes) of each reference."""
    return list(refs.values_list("model_id", "tensor_id", "tensor__stored_bytes", "tensor__logical_bytes"))


def model_storage(*, model: ModelEntry) -> dict:
    """``model``'s row of the team breakdown (see ``team_storage_breakdown``): its own objects and its even share
    of the ones other models reference too, read from the references of its objects only."""
    refs = _ref_rows(StoredTensorRef.objects.filter(tensor__refs__model=model).distinct())
    shares = _even_shares([(model_id, tensor_id, stored) for model_id, tensor_id, stored, _ in refs])
    return _model_row(model, shares.get(model.pk, NO_SHARE))


def _model_rows(team: Team) -> tuple[list[dict], dict]:
    refs = _ref_rows(StoredTensorRef.objects.filter(model__team=team))
    shares = _even_shares([(model_id, tensor_id, stored) for model_id, tensor_id, stored, _ in refs])
    models = ModelEntry.objects.filter(team=team).only("id", "name", "storage", "source", "total_bytes")
    rows = [_model_row(model, shares.get(model.pk, NO_SHARE)) for model in models.order_by("name", "id")]
    distinct = {tensor_id: (stored, logical) for _, tensor_id, stored, logical in refs}
    ref_counts = Counter(tensor_id for _, tensor_id, _, _ in refs)
    # every object of the team's store, referenced or not (a row without refs waits for the sweep)
    every_object = StoredTensor.objects.filter(team=team).aggregate(objects=Count("id"), stored=Sum("stored_bytes"))
    store = {
        "objects": every_object["objects"],
        "on_disk_bytes": every_object["stored"] or 0,
        "referenced_on_disk_bytes": sum(stored for stored, _ in distinct.values()),
        "shared_bytes": sum(distinct[t][0] for t, n in ref_counts.items() if n > 1),
        # what storing shared tensors once saved: their logical bytes for every reference beyond the first
        "dedup_saved_bytes": sum(logical for _, _, _, logical in refs) - sum(lg for _, lg in distinct.values()),
    }
    return rows, store


def _artifact_row(artifact: Artifact) -> dict:
    return {"id": artifact.pk, "codec": artifact.codec_id, "label": artifact.codec_label,
            "pair_id": artifact.pair_id, "pair": artifact.pair.name if artifact.pair_id else None,
            "gradient_set_id": artifact.gradient_set_id,
            **_sizes(logical=artifact.original_bytes, on_disk=artifact.compressed_bytes)}


def _upload_row(entry: GradientSet | Dataset, size: int) -> dict:
    held = entry.source == Dataset.Source.UPLOAD
    return {"id": entry.pk, "name": entry.name, "source": entry.source,
            **_sizes(logical=size, on_disk=size if held else 0, held=held)}


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _restored_rows(team: Team) -> list[dict]:
    """Restored copies on disk: decompress jobs' (they expire unless pinned) and the cache of models stored
    compressed restored for a reader (it expires once unused for the same time; a job in flight keeps it)."""
    rows = []
    root = Path(settings.DELTAVAULT_RESTORED_DIR)
    folders = {int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit()} if root.is_dir() else {}
    for job in Job.objects.filter(team=team, pk__in=list(folders)).order_by("id"):
        size = _folder_bytes(folders[job.pk])
        rows.append({"job_id": job.pk, "model_id": None, "label": f"job #{job.pk}", "pinned": job.pinned,
                     "expires_at": job_restored_expires_at(job), **_sizes(logical=size, on_disk=size)})
    # a model's copy is named "<model id>-<manifest digest>"; a copy of an older manifest goes at the next sweep
    copies = {}
    if (root / "models").is_dir():
        for folder in (root / "models").iterdir():
            model_id = folder.name.split("-", 1)[0]
            if folder.is_dir() and model_id.isdigit():
                copies[folder] = int(model_id)
    models = ModelEntry.objects.filter(team=team, pk__in=set(copies.values())).only("id", "name", "store_manifest")
    models = {m.pk: m for m in models}
    ttl = timedelta(hours=float(settings.DELTAVAULT_RESTORED_TTL_HOURS))
    for folder, model_id in sorted(copies.items(), key=lambda item: (item[1], item[0].name)):
        model = models.get(model_id)
        if model is None:
            continue
        size = _folder_bytes(folder)
        last_use = datetime.fromtimestamp(folder.stat().st_mtime, tz=timezone.utc)
        rows.append({"job_id": None, "model_id": model.pk, "label": f"model {model.name}", "pinned": False,
                     "expires_at": last_use + ttl if folder == model_restored_cache(model) else None,
                     **_sizes(logical=size, on_disk=size)})
    return rows


def _total(label: str, key: str, rows: list[dict]) -> dict:
    held = [r for r in rows if r["held"]]
    return {"key": key, "label": label, "items": len(held),
            **_sizes(logical=sum(r["logical_bytes"] for r in held), on_disk=sum(r["on_disk_bytes"] for r in held))}


def _codec_rows(artifacts: list[Artifact], models: list[dict], store: dict) -> list[dict]:
    """What each codec saved: artifacts grouped by codec id, and the tensor store's two savings (shared tensors
    stored once, then the objects' coding)."""
    by_codec: dict[str, list[Artifact]] = defaultdict(list)
    for artifact in artifacts:
        by_codec[artifact.codec_id].append(artifact)
    rows = [{"codec": codec, "label": codec, "items": len(items),
             **_sizes(logical=sum(a.original_bytes for a in items), on_disk=sum(a.compressed_bytes for a in items))}
            for codec, items in sorted(by_codec.items())]
    stored = [m for m in models if m["storage"] == ModelEntry.Storage.COMPRESSED]
    if stored:
        logical = sum(m["logical_bytes"] for m in stored)
        on_disk = sum(m["on_disk_bytes"] for m in stored)
        dedup = store["dedup_saved_bytes"]
        rows.append({"codec": "store-dedup", "label": "tensor store: shared tensors once", "items": len(stored),
                     **_sizes(logical=logical, on_disk=logical - dedup)})
        rows.append({"codec": "store-coding", "label": "tensor store: fmdelta-nobase coding", "items": len(stored),
                     **_sizes(logical=logical - dedup, on_disk=on_disk)})
    return rows


def team_storage_breakdown(*, team: Team) -> dict:
    """Every byte ``team``'s registry holds: per item its logical bytes, bytes on disk and what was saved, per
    category, per codec, and in total.

    Definitions (``STORAGE_DEFINITIONS``, shown on the page):

    - logical bytes: the size of the files an item stands for, stored plainly: a model's registered files, an
      artifact's original (the fine-tune or gradient files it restores), a dataset's file, a restored copy's files.
    - bytes on disk: what the registry itself keeps for the item: a model stored compressed, its share of the
      tensor-store objects it references (an object several models reference is split evenly between them); an
      uploaded folder, its files; an artifact, its file; a restored copy, its files. A folder registered from a
      server path is the user's, not the registry's: 0 bytes on disk, listed but left out of the totals.
    - saved: logical bytes minus bytes on disk.
    - ratio: original bytes / bytes needed besides the base, i.e. logical bytes / bytes on disk (an artifact:
      original bytes / compressed bytes); none when nothing is on disk.
    - shared: bytes on disk of tensor-store objects that more than one model references; each such model carries
      an even share of them.

    Even shares are whole bytes (the first ``stored % n`` referencing models by id carry one byte more), so the
    models' bytes on disk add up to the referenced objects exactly. Totals count held items only; an item's
    logical bytes count once per copy the registry holds (a fine-tune uploaded and also kept as an artifact counts
    twice, as it takes space twice). Restored copies are decompress jobs' outputs and the copies of models stored
    compressed restored for their readers; both expire. Objects no model references any more (a delete's files
    not yet swept) are their own category. Per codec: artifacts grouped by codec id; a team's models stored compressed give two
    rows, ``store-dedup`` (logical bytes -> after keeping each object several models reference once) and
    ``store-coding`` (-> the objects' bytes on disk, coded by ``fmdelta-nobase``; a tensor repeated inside one
    model is one object too, so what that saved shows here).
    """
    models, store = _model_rows(team)
    artifacts = list(Artifact.objects.filter(team=team).select_related("pair", "gradient_set").order_by("id"))
    pair_artifacts = [_artifact_row(a) for a in artifacts if a.gradient_set_id is None]
    gradient_artifacts = [_artifact_row(a) for a in artifacts if a.gradient_set_id is not None]
    gradient_sets = []
    for entry in GradientSet.objects.filter(team=team).order_by("name", "id"):
        gradient_sets.append({**_upload_row(entry, entry.total_bytes),
                              "artifacts": [r for r in gradient_artifacts if r["gradient_set_id"] == entry.pk]})
    datasets = [_upload_row(d, d.size_bytes) for d in Dataset.objects.filter(team=team).order_by("name", "id")]
    restored = _restored_rows(team)
    unreferenced = store["on_disk_bytes"] - store["referenced_on_disk_bytes"]
    categories = [
        _total("Models stored compressed", "models-compressed",
               [m for m in models if m["storage"] == ModelEntry.Storage.COMPRESSED]),
        _total("Uploaded model folders", "models-uploaded",
               [m for m in models if m["storage"] != ModelEntry.Storage.COMPRESSED]),
        _total("Pair artifacts", "pair-artifacts", pair_artifacts),
        _total("Gradient sets (uploads)", "gradient-sets", gradient_sets),
        _total("Gradient set artifacts", "gradient-artifacts", gradient_artifacts),
        _total("Datasets (uploads)", "datasets", datasets),
        _total("Restored copies (expire)", "restored", restored),
        _total("Objects no model references (swept)", "unreferenced",
               [_sizes(logical=unreferenced, on_disk=unreferenced)] if unreferenced else []),
    ]
    totals = _sizes(logical=sum(c["logical_bytes"] for c in categories),
                    on_disk=sum(c["on_disk_bytes"] for c in categories))
    del totals["held"]
    return {
        "team": team.slug, "definitions": [{"term": t, "meaning": m} for t, m in STORAGE_DEFINITIONS],
        "totals": {**totals, "shared_bytes": store["shared_bytes"], "store_objects": store["objects"]},
        "categories": categories, "models": models, "artifacts": pair_artifacts, "gradient_sets": gradient_sets,
        "datasets": datasets, "restored": restored, "codecs": _codec_rows(artifacts, models, store),
    }
