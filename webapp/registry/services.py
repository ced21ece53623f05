"""Writes of the registry: register models and datasets (from a server path inside the configured roots, or by
upload), create pairs, and open artifacts for download."""

from __future__ import annotations

import logging
import re
import time
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import modelcodecs
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import storages
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.text import get_valid_filename, slugify

from webapp.core.exceptions import ApplicationError
from webapp.core.paths import path_resolve_in_roots, team_roots
from webapp.core.redact import redact_paths
from webapp.registry.models import Artifact, Dataset, GradientSet, ModelEntry, Pair, StoredTensor, StoredTensorRef
from webapp.registry.selectors import (artifact_base_dir, artifact_codec_class, model_delete_impact,
                                       pair_delete_impact)
from webapp.registry.storage import (TENSOR_STORE_PREFIX, artifact_storage, artifact_store, file_sha256,
                                     model_local_folder, model_restored_cache, tensor_store_base,
                                     tensor_store_root)
from webapp.teams.models import Team
from webapp.teams.services import team_require_admin, team_require_write

if TYPE_CHECKING:
    from modelcodecs.tensorstore import StoreSummary

    from webapp.jobs.models import Job

logger = logging.getLogger(__name__)

# What a model upload may contain: weights (safetensors only: no pickles), configs, tokenizer files.
MODEL_UPLOAD_PATTERNS = (
    re.compile(r".+\.safetensors$"),
    re.compile(r".+\.json$"),
    re.compile(r".+\.model$"),  # sentencepiece
    re.compile(r".+\.txt$"),  # vocab.txt, merges.txt
    re.compile(r".+\.tiktoken$"),
)
DATASET_UPLOAD_SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".csv", ".tsv")


def _require_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ApplicationError("A name is required.")
    return name


def _unique_name(*, model, team: Team, name: str) -> None:
    if model.objects.filter(team=team, name=name).exists():
        raise ApplicationError(f"This team already has a {model._meta.verbose_name} named {name!r}.",
                               extra={"name": name})


def _has_nul(value) -> bool:
    """Whether a JSON-like value holds a NUL character anywhere (PostgreSQL text and jsonb cannot store one)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def _read_model_info(path: Path) -> dict:
    try:
        info = modelcodecs.read_model_info(path)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Not a model folder we can read: {exc}") from exc
    except OSError as exc:
        raise ApplicationError(f"Could not read the model folder: {exc.strerror or type(exc).__name__}.") from exc
    if _has_nul(info):
        raise ApplicationError("Not a model folder we can read: its config or tensor names hold NUL characters.")
    return info


def _files_with_mtimes(path: Path, files: list[dict]) -> list[dict]:
    """The files of ``read_model_info`` with each one's modification time (``mtime_ns``), for the cheap change
    check (``webapp.registry.selectors.model_changes``) before a job uses the model."""
    out = []
    for entry in files:
        entry = dict(entry)
        try:
            entry["mtime_ns"] = (path / entry["name"]).stat().st_mtime_ns
        except (OSError, KeyError):
            pass
        out.append(entry)
    return out


def _model_entry_fill(entry: ModelEntry, info: dict) -> ModelEntry:
    entry.layout = info.get("layout") or ""
    entry.architecture = info.get("architecture") or ""
    entry.model_type = info.get("model_type") or ""
    entry.dtypes = info.get("dtypes") or {}
    entry.parameter_count = int(info.get("parameter_count") or 0)
    entry.tensor_count = int(info.get("tensor_count") or 0)
    entry.total_bytes = int(info.get("total_bytes") or 0)
    entry.files = _files_with_mtimes(Path(entry.path), info.get("files") or [])
    return entry


def _model_entry_build(*, team: Team, user: AbstractBaseUser, name: str, path: Path, source: str,
                       info: dict) -> ModelEntry:
    entry = _model_entry_fill(ModelEntry(team=team, name=name, path=str(path), source=source, created_by=user), info)
    entry.full_clean()
    entry.save()
    return entry


@transaction.atomic
def model_rescan(*, model: ModelEntry, user: AbstractBaseUser) -> ModelEntry:
    """Read a registered model folder again (layout, sizes, hashes, modification times) after it changed on disk.
    Artifacts coded against its old bytes (as a base) will no longer restore; their jobs say so."""
    team_require_write(user=user, team=model.team)
    if model.storage == ModelEntry.Storage.COMPRESSED:
        raise ApplicationError(f"Model {model.name} is stored compressed: the registry holds its bytes, so there "
                               "is no folder to rescan. Register the changed folder as a new model.")
    _model_entry_fill(model, _read_model_info(Path(model.path)))
    model.full_clean()
    model.save()
    return model


@transaction.atomic
def model_register_from_path(*, team: Team, user: AbstractBaseUser, name: str, path: str,
                             store_compressed: bool = False) -> ModelEntry:
    """Register a model folder that already is on the server, inside ``DELTAVAULT_MODEL_ROOTS``; with
    ``store_compressed``, also queue the job that stores it in the team's tensor store (the folder stays)."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=ModelEntry, team=team, name=name)
    resolved = path_resolve_in_roots(path, roots=team_roots(team), kind="dir")
    info = _read_model_info(resolved)
    entry = _model_entry_build(team=team, user=user, name=name, path=resolved, source=ModelEntry.Source.PATH,
                               info=info)
    if store_compressed:
        model_store_submit(model=entry, user=user)
    return entry


def _safe_upload_name(raw: str) -> str:
    base = Path(str(raw).replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise ApplicationError(f"Invalid file name {raw!r}.")
    try:
        safe = get_valid_filename(base)
    except Exception as exc:  # noqa: BLE001 - Django raises SuspiciousFileOperation for names like "."
        raise ApplicationError(f"Invalid file name {raw!r}.") from exc
    if safe.startswith("."):
        raise ApplicationError(f"Hidden files are not accepted: {raw!r}.")
    return safe


def _upload_dir(team: Team, kind: str, name: str) -> Path:
    slug = slugify(name)[:80] or "upload"
    root = Path(settings.DELTAVAULT_UPLOADS_DIR) / team.slug / kind
    target = root / slug
    if target.exists():
        target = root / f"{slug}-{uuid.uuid4().hex[:8]}"
    return target


def _write_upload(upload: UploadedFile, dest: Path) -> int:
    written = 0
    with open(dest, "xb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
            written += len(chunk)
    return written


def _stage_upload(*, team: Team, kind: str, name: str, files: list[UploadedFile], patterns, what: str, read):
    """Check the uploaded names against ``patterns``, write them into a hidden staging folder, ``read`` it (which
    validates it) and rename it into ``$DELTAVAULT_HOME/uploads/<team>/<kind>/<name>``. Returns (folder, info)."""
    names: list[str] = []
    for upload in files:
        safe = _safe_upload_name(upload.name)
        if not any(p.fullmatch(safe) for p in patterns):
            raise ApplicationError(f"File type not accepted: {upload.name!r}. Upload {what} only.",
                                   extra={"file": upload.name})
        if safe in names:
            raise ApplicationError(f"Two uploaded files are named {safe!r}.")
        names.append(safe)
    if not any(n.endswith(".safetensors") for n in names):
        raise ApplicationError("The upload has no *.safetensors file.")
    total = sum(int(upload.size or 0) for upload in files)
    if total > settings.DELTAVAULT_MAX_UPLOAD_BYTES:
        raise ApplicationError(
            f"The upload is {total} bytes; the limit is {settings.DELTAVAULT_MAX_UPLOAD_BYTES} bytes.")

    target = _upload_dir(team, kind, name)
    staging = target.parent / f".partial-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        written = 0
        for upload, safe in zip(files, names):
            written += _write_upload(upload, staging / safe)
            if written > settings.DELTAVAULT_MAX_UPLOAD_BYTES:
                raise ApplicationError(f"The upload exceeds {settings.DELTAVAULT_MAX_UPLOAD_BYTES} bytes.")
        info = read(staging)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, info


def model_register_upload(*, team: Team, user: AbstractBaseUser, name: str, files: list[UploadedFile],
                          store_compressed: bool = False) -> ModelEntry:
    """Store uploaded files as a model folder under ``$DELTAVAULT_HOME/uploads/<team>/models/<name>`` and
    register it. Only ``*.safetensors``, ``*.json`` and tokenizer files are accepted. With ``store_compressed``,
    also queue the job that stores it in the team's tensor store, which removes the uploaded folder."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=ModelEntry, team=team, name=name)
    if not files:
        raise ApplicationError("Upload at least one file (a *.safetensors checkpoint and its config.json).")
    target, info = _stage_upload(
        team=team, kind="models", name=name, files=files, patterns=MODEL_UPLOAD_PATTERNS, read=_read_model_info,
        what="*.safetensors weights, *.json configs and tokenizer files (*.model, *.txt, *.tiktoken)")
    try:
        with transaction.atomic():
            entry = _model_entry_build(team=team, user=user, name=name, path=target,
                                       source=ModelEntry.Source.UPLOAD, info=info)
            if store_compressed:
                model_store_submit(model=entry, user=user)
            return entry
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


@transaction.atomic
def pair_create(*, team: Team, user: AbstractBaseUser, name: str, base: ModelEntry,
                finetuned: ModelEntry) -> Pair:
    """A base model and one of its fine-tunes, checked compatible by ``modelcodecs.compare_models``."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    if base.team_id != team.pk or finetuned.team_id != team.pk:
        raise ApplicationError("Both models must belong to the team.")
    if base.pk == finetuned.pk:
        raise ApplicationError("The base and the fine-tuned model must be different models.")
    _unique_name(model=Pair, team=team, name=name)
    try:
        report = modelcodecs.compare_models(model_local_folder(base), model_local_folder(finetuned))
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Could not compare the models: {exc}") from exc
    except OSError as exc:
        raise ApplicationError(f"Could not read the models: {exc.strerror or type(exc).__name__}.") from exc
    if _has_nul(report):
        raise ApplicationError("Could not compare the models: tensor names hold NUL characters.")
    if not report.get("compatible"):
        problems = []
        for key in ("missing_in_base", "missing_in_finetuned", "shape_mismatch", "dtype_mismatch"):
            if report.get(key):
                problems.append(f"{len(report[key])} {key.replace('_', ' ')}")
        raise ApplicationError(
            f"{finetuned.name!r} is not a fine-tune of {base.name!r} that we can code against it"
            + (f" ({', '.join(problems)})." if problems else "."),
            extra={"report": report},
        )
    pair = Pair(team=team, name=name, base=base, finetuned=finetuned, report=report, created_by=user)
    pair.full_clean()
    pair.save()
    return pair


def _check_text(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    if b"\x00" in head:
        raise ApplicationError("The dataset is not a text file (it contains NUL bytes).")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a multi-byte character cut at the 1 MiB boundary is fine
            raise ApplicationError("The dataset is not UTF-8 text.") from exc


def _dataset_info(path: Path, kind: str) -> dict:
    """Validate a dataset file of ``kind``; a labelled file is parsed whole (the error names the bad line)."""
    if kind not in Dataset.Kind.values:
        raise ApplicationError(f"Unknown dataset kind {kind!r}: one of {', '.join(Dataset.Kind.values)}.")
    _check_text(path)
    if kind != Dataset.Kind.LABELLED:
        return {}
    from modelcodecs.evaluate import labelled_dataset_info

    try:
        info = labelled_dataset_info(path)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Invalid labelled dataset: {exc}", extra={"path": path.name}) from exc
    if len(info["labels"]) < 2:
        raise ApplicationError(f"Invalid labelled dataset: {path.name} has a single label "
                               f"({next(iter(info['labels']))!r}); accuracy needs at least two.")
    return info


@transaction.atomic
def dataset_register_from_path(*, team: Team, user: AbstractBaseUser, name: str, path: str,
                               kind: str = Dataset.Kind.TEXT) -> Dataset:
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=Dataset, team=team, name=name)
    resolved = path_resolve_in_roots(path, roots=team_roots(team), kind="file")
    try:
        info = _dataset_info(resolved, kind)
        size, sha = file_sha256(resolved)
    except OSError as exc:
        raise ApplicationError(f"Could not read the file: {exc.strerror or type(exc).__name__}.") from exc
    dataset = Dataset(team=team, name=name, path=str(resolved), source=Dataset.Source.PATH, size_bytes=size,
                      sha256=sha, kind=kind, info=info, created_by=user)
    dataset.full_clean()
    dataset.save()
    return dataset


def dataset_upload(*, team: Team, user: AbstractBaseUser, name: str, file: UploadedFile,
                   kind: str = Dataset.Kind.TEXT) -> Dataset:
    """Store an uploaded UTF-8 text file under ``$DELTAVAULT_HOME/uploads/<team>/datasets/`` and register it."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=Dataset, team=team, name=name)
    safe = _safe_upload_name(file.name)
    if not safe.lower().endswith(DATASET_UPLOAD_SUFFIXES):
        raise ApplicationError(f"File type not accepted: {file.name!r}. Upload a text file "
                               f"({', '.join(DATASET_UPLOAD_SUFFIXES)}).", extra={"file": file.name})
    if int(file.size or 0) > settings.DELTAVAULT_MAX_UPLOAD_BYTES:
        raise ApplicationError(f"The file is larger than {settings.DELTAVAULT_MAX_UPLOAD_BYTES} bytes.")
    target_dir = _upload_dir(team, "datasets", name)
    target_dir.mkdir(parents=True)
    target = target_dir / safe
    try:
        _write_upload(file, target)
        info = _dataset_info(target, kind)
        size, sha = file_sha256(target)
        with transaction.atomic():
            dataset = Dataset(team=team, name=name, path=str(target), source=Dataset.Source.UPLOAD,
                              size_bytes=size, sha256=sha, kind=kind, info=info, created_by=user)
            dataset.full_clean()
            dataset.save()
    except BaseException:
        shutil.rmtree(target_dir, ignore_errors=True)
        raise
    return dataset


def artifact_open(*, artifact: Artifact):
    """Open the artifact's file from the artifacts storage for reading (the API streams it)."""
    storage = storages["artifacts"]
    if not storage.exists(artifact.storage_name):
        raise ApplicationError("The artifact file is missing from storage.")
    return storage.open(artifact.storage_name, "rb")


def artifact_download_name(artifact: Artifact) -> str:
    pair = slugify(artifact.pair.name) if artifact.pair else "artifact"
    return f"{pair}-{artifact.codec_id}-{artifact.pk}.dvz"


# ---- delete --------------------------------------------------------------------------------------------------
# Rows go in one transaction; the files they point at are removed only once it has committed (a rolled-back
# delete leaves every file in place). A file whose removal fails afterwards is an orphan that
# ``artifact_storage_sweep`` removes later: no row ever points at a missing file.
ORPHAN_MIN_AGE_S = 3600  # a compress job stores its file a moment before its row commits: never sweep young files


def files_remove_on_commit(*, storage_names: list[str] = (), dirs: list[Path] = ()) -> None:
    """After the current transaction commits, delete these artifact files and folders (best effort)."""
    storage_names, dirs = list(storage_names), [Path(d) for d in dirs]

    def remove() -> None:
        storage = artifact_storage()
        for name in storage_names:
            try:
                storage.delete(name)
            except Exception:  # noqa: BLE001 - left for artifact_storage_sweep
                logger.warning("could not delete artifact file %s", name, exc_info=True)
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)

    transaction.on_commit(remove)


def _require_idle(*, field: str, objs: list, what: str) -> None:
    """Refuse while a queued or running job uses one of ``objs``."""
    from webapp.jobs.models import Job

    busy = Job.objects.filter(**{f"{field}__in": objs}).exclude(status__in=Job.TERMINAL).order_by("pk").first()
    if busy is not None:
        raise ApplicationError(f"Job #{busy.pk} ({busy.status}) uses {what}: cancel it or wait for it to finish "
                               "first.", extra={"job": busy.pk})


def _require_no_artifacts(*, artifacts: list[Artifact], what: str, with_artifacts: bool) -> None:
    if artifacts and not with_artifacts:
        names = "; ".join(a.label for a in artifacts[:10]) + ("; ..." if len(artifacts) > 10 else "")
        count = "1 artifact still needs" if len(artifacts) == 1 else f"{len(artifacts)} artifacts still need"
        raise ApplicationError(
            f"{count} {what}: {names}. Delete them too (with_artifacts) or delete them first.",
            extra={"artifacts": [a.pk for a in artifacts]})


def _delete_rows(*, artifacts: list[Artifact], pairs: list[Pair]) -> dict:
    freed = sum(a.compressed_bytes for a in artifacts)
    files_remove_on_commit(storage_names=[a.storage_name for a in artifacts])
    Artifact.objects.filter(pk__in=[a.pk for a in artifacts]).delete()
    Pair.objects.filter(pk__in=[p.pk for p in pairs]).delete()
    return {"artifacts": len(artifacts), "pairs": len(pairs), "bytes_freed": freed}


@transaction.atomic
def artifact_delete(*, artifact: Artifact, user: AbstractBaseUser) -> dict:
    """Delete the artifact's row and (once committed) its file. Jobs that used it keep their history."""
    team_require_admin(user=user, team=artifact.team, action="delete things")
    _require_idle(field="artifact", objs=[artifact], what=f"artifact #{artifact.pk}")
    return _delete_rows(artifacts=[artifact], pairs=[])


@transaction.atomic
def pair_delete(*, pair: Pair, user: AbstractBaseUser, with_artifacts: bool = False) -> dict:
    """Delete a pair; its artifacts need its base, so they block unless ``with_artifacts`` deletes them too."""
    team_require_admin(user=user, team=pair.team, action="delete things")
    impact = pair_delete_impact(pair=pair)
    _require_no_artifacts(artifacts=impact["artifacts"], what=f"pair {pair.name}", with_artifacts=with_artifacts)
    _require_idle(field="pair", objs=[pair], what=f"pair {pair.name}")
    _require_idle(field="artifact", objs=impact["artifacts"], what="one of its artifacts")
    return _delete_rows(artifacts=impact["artifacts"], pairs=[pair])


@transaction.atomic
def model_delete(*, model: ModelEntry, user: AbstractBaseUser, with_artifacts: bool = False) -> dict:
    """Unregister a model, with the pairs it is in. Artifacts of those pairs block unless ``with_artifacts``
    deletes them too (an artifact cannot be restored without its base). An uploaded model's files are removed; a
    folder registered from a server path is left where it is."""
    team_require_admin(user=user, team=model.team, action="delete things")
    impact = model_delete_impact(model=model)
    _require_no_artifacts(artifacts=impact["artifacts"], what=f"model {model.name} (through its pairs)",
                          with_artifacts=with_artifacts)
    _require_idle(field="model", objs=[model], what=f"model {model.name}")
    _require_idle(field="pair", objs=impact["pairs"], what="one of its pairs")
    _require_idle(field="artifact", objs=impact["artifacts"], what="one of its artifacts")
    summary = _delete_rows(artifacts=impact["artifacts"], pairs=impact["pairs"])
    if model.storage == ModelEntry.Storage.COMPRESSED:
        summary["bytes_freed"] += _tensor_refs_release(model=model)
        files_remove_on_commit(dirs=[model_restored_cache(model)])
    elif model.source == ModelEntry.Source.UPLOAD:
        summary["bytes_freed"] += model.total_bytes
    if model.source == ModelEntry.Source.UPLOAD:
        files_remove_on_commit(dirs=[Path(model.path)])
    model.delete()
    return {**summary, "models": 1}


@transaction.atomic
def dataset_delete(*, dataset: Dataset, user: AbstractBaseUser) -> dict:
    """Unregister a dataset (an uploaded one's file is removed). Jobs that used it keep their results."""
    team_require_admin(user=user, team=dataset.team, action="delete things")
    _require_idle(field="dataset", objs=[dataset], what=f"dataset {dataset.name}")
    freed = 0
    if dataset.source == Dataset.Source.UPLOAD:
        freed = dataset.size_bytes
        files_remove_on_commit(dirs=[Path(dataset.path).parent])
    dataset.delete()
    return {"datasets": 1, "bytes_freed": freed}


def artifact_storage_sweep(*, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[str]:
    """Delete files in the artifacts storage that no Artifact row points at (left by a removal that failed after
    its delete committed, or by a worker killed while storing). Returns the names removed. The tensor store
    (``tensors/``) is left to :func:`tensor_store_sweep`."""
    storage = artifact_storage()
    known = set(Artifact.objects.values_list("storage_name", flat=True))
    removed = []

    def walk(prefix: str) -> None:
        try:
            dirs, files = storage.listdir(prefix)
        except FileNotFoundError:
            return
        for sub in dirs:
            if f"{prefix}{sub}/" != TENSOR_STORE_PREFIX:  # the tensor store has its own sweep
                walk(f"{prefix}{sub}/")
        for name in files:
            full = f"{prefix}{name}"
            if full in known:
                continue
            try:
                age = time.time() - storage.get_modified_time(full).timestamp()
            except (NotImplementedError, OSError):
                age = min_age_s
            if age >= min_age_s:
                storage.delete(full)
                removed.append(full)

    walk("")
    return removed


def artifact_import(*, team: Team, user: AbstractBaseUser, pair: Pair, file: UploadedFile) -> Artifact:
    """Accept an artifact made elsewhere (``modelcodecs compress``) as one of ``pair``'s artifacts, after checking
    it in full: it is decoded against the pair's base, every hash inside it is checked, and the decoded files must
    match the hashes the registry recorded for the pair's fine-tuned model (lossless codecs; a lossy artifact's
    non-tensor files). Nothing is stored unless every check passes."""
    team_require_write(user=user, team=team)
    if pair.team_id != team.pk:
        raise ApplicationError("The pair belongs to another team.")
    if int(file.size or 0) > settings.DELTAVAULT_MAX_UPLOAD_BYTES:
        raise ApplicationError(f"The file is larger than {settings.DELTAVAULT_MAX_UPLOAD_BYTES} bytes.")
    staging = Path(settings.DELTAVAULT_TMP_DIR) / "imports"
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / f"import-{uuid.uuid4().hex}.dvz"
    try:
        _write_upload(file, staged)
        try:
            info = modelcodecs.inspect_artifact(staged)
        except modelcodecs.ModelCodecError as exc:
            raise ApplicationError("Not a DeltaVault artifact we can read (corrupted, truncated or another "
                                   "format).") from exc
        artifact = Artifact(team=team, pair=pair, source=Artifact.Source.IMPORT, codec_id=info["codec"],
                            codec_config=info["codec_config"], original_bytes=info["original_bytes"],
                            compressed_bytes=info["compressed_bytes"], ratio=info["ratio"])
        codec_cls = artifact_codec_class(artifact)
        if codec_cls is None:
            raise ApplicationError(f"The artifact was made with the codec {info['codec']!r}, which this server "
                                   "does not have.")
        # Every file must be there; a lossy codec's tensor files are not compared (verify_artifact knows which).
        expected = {f["name"]: f.get("sha256") for f in pair.finetuned.files or [] if f.get("name")}
        if not expected or not all(expected.values()):
            raise ApplicationError("The pair's fine-tuned model has no recorded file hashes to check against.")
        try:
            report = modelcodecs.verify_artifact(staged, base_dir=artifact_base_dir(artifact),
                                                 expected_files=expected, threads=settings.DELTAVAULT_JOB_THREADS)
        except modelcodecs.ModelCodecError as exc:
            raise ApplicationError(f"The artifact does not decode against the pair's base: "
                                   f"{redact_paths(str(exc))}") from exc
        if not report.ok:
            raise ApplicationError(f"The artifact does not restore the pair's fine-tuned model: "
                                   f"{redact_paths(report.message)}", extra={"files": report.files})
        artifact.sha256 = file_sha256(staged)[1]
        if codec_cls.lossless:
            artifact.verification = Artifact.Verification.VERIFIED
            artifact.verified_at = timezone.now()
        artifact.metrics = {"imported_by": user.get_username(), "verify_seconds": report.seconds}
        artifact.storage_name = f"{team.slug}/import-{uuid.uuid4().hex[:12]}-{artifact.codec_id}.dvz"
        artifact.full_clean()
        stored = artifact_store(local=staged, name=artifact.storage_name)
        try:
            with transaction.atomic():
                artifact.storage_name = stored
                artifact.save()
        except BaseException:
            artifact_storage().delete(stored)
            raise
    finally:
        staged.unlink(missing_ok=True)
    return artifact


# ---- gradient sets -------------------------------------------------------------------------------------------
GRADIENT_UPLOAD_PATTERNS = (re.compile(r".+\.safetensors$"),)


def _read_gradient_set(path: Path) -> dict:
    from modelcodecs.gradients import gradient_set_info

    try:
        return gradient_set_info(path)
    except modelcodecs.ModelCodecError as exc:
        raise ApplicationError(f"Not a gradient set we can read: {exc}", extra={"path": str(path)}) from exc
    except OSError as exc:
        raise ApplicationError(f"Could not read the gradient set: {exc}", extra={"path": str(path)}) from exc


def _gradient_set_build(*, team: Team, user: AbstractBaseUser, name: str, path: Path, source: str, info: dict,
                        description: str = "") -> GradientSet:
    if not info["floats"]:
        raise ApplicationError("The folder holds no float gradient tensors.", extra={"path": str(path)})
    entry = GradientSet(
        team=team, name=name, path=str(path), source=source, description=description, steps=info["steps"],
        tensor_count=info["tensors"], float_count=info["floats"], dtypes=info["dtypes"],
        total_bytes=info["total_bytes"], params=info["params"], non_float_tensors=info["non_float_tensors"],
        files=info["file_hashes"], created_by=user,
    )
    entry.full_clean()
    entry.save()
    return entry


@transaction.atomic
def gradient_set_register_from_path(*, team: Team, user: AbstractBaseUser, name: str, path: str,
                                    description: str = "") -> GradientSet:
    """Register a folder of gradient safetensors files that is on the server, inside the team's folders."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=GradientSet, team=team, name=name)
    resolved = path_resolve_in_roots(path, roots=team_roots(team), kind="dir")
    return _gradient_set_build(team=team, user=user, name=name, path=resolved, source=ModelEntry.Source.PATH,
                               info=_read_gradient_set(resolved), description=description)


def gradient_set_register_upload(*, team: Team, user: AbstractBaseUser, name: str,
                                 files: list[UploadedFile]) -> GradientSet:
    """Store uploaded gradient files (``*.safetensors`` only) under ``uploads/<team>/gradients/<name>`` and
    register them."""
    team_require_write(user=user, team=team)
    name = _require_name(name)
    _unique_name(model=GradientSet, team=team, name=name)
    if not files:
        raise ApplicationError("Upload at least one *.safetensors file of gradients.")
    target, info = _stage_upload(team=team, kind="gradients", name=name, files=files,
                                 patterns=GRADIENT_UPLOAD_PATTERNS, read=_read_gradient_set,
                                 what="*.safetensors gradient files")
    try:
        with transaction.atomic():
            return _gradient_set_build(team=team, user=user, name=name, path=target,
                                       source=ModelEntry.Source.UPLOAD, info=info)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


# ---- models stored compressed (a tensor store per team) --------------------------------------------------------
# A model stored compressed is a manifest (``ModelEntry.store_manifest``) naming objects of its team's tensor store
# (``modelcodecs.tensorstore``); each object has one ``StoredTensor`` row, and each model that needs it one
# ``StoredTensorRef``. Object files are only ever removed by a transaction that holds the team row's lock and
# finds no row for the key, and refs are only added by a transaction that holds that lock and (re)writes any object
# file it finds missing: so a store that reuses an object and a delete that drops its last reference cannot
# interleave into a ref to a removed file, on PostgreSQL (row locks) as on SQLite (one writer at a time).


def _team_lock(team_id: int) -> None:
    Team.objects.select_for_update().only("pk").get(pk=team_id)


def model_store_submit(*, model: ModelEntry, user: AbstractBaseUser) -> Job:
    """Queue a ``store`` job: the model's files go into the team's tensor store (see ``JOB_KINDS``)."""
    from webapp.jobs.models import Job
    from webapp.jobs.services import job_submit  # imports the registry's services: only when called

    return job_submit(team=model.team, user=user, kind=Job.Kind.STORE, model=model)


def model_store_commit(*, model: ModelEntry, summary: StoreSummary,
                       rewrite_missing: Callable[[list[str]], object]) -> ModelEntry:
    """Record a finished ``modelcodecs.tensorstore.store_model`` run of ``model``, in one transaction: a
    ``StoredTensor`` row per object (existing ones locked), a ref per object, the manifest on the model. An
    object file found missing now (a concurrent delete removed it after the run saw it) is written again by
    ``rewrite_missing(keys)`` while the lock is held. An uploaded model's files are removed once this commits."""
    from modelcodecs.tensorstore import manifest_keys, object_path

    root = tensor_store_root(model.team_id)
    keys = manifest_keys(summary.manifest)
    with transaction.atomic():
        _team_lock(model.team_id)
        row = ModelEntry.objects.select_for_update().get(pk=model.pk)
        if row.storage == ModelEntry.Storage.COMPRESSED:
            raise ApplicationError(f"Model {model.name} is stored compressed already.")
        missing = [key for key in keys if not object_path(root, key).is_file()]
        if missing:
            logger.warning("model %s: %d objects vanished before commit; writing them again", model.pk,
                           len(missing))
            rewrite_missing(missing)
        existing = {t.key: t for t in StoredTensor.objects.select_for_update().filter(
            team_id=model.team_id, key__in=keys).order_by("pk")}
        StoredTensor.objects.bulk_create([
            StoredTensor(team_id=model.team_id, key=key, logical_bytes=summary.objects[key]["logical_bytes"],
                         stored_bytes=object_path(root, key).stat().st_size)
            for key in keys if key not in existing])
        tensors = StoredTensor.objects.filter(team_id=model.team_id, key__in=keys)
        StoredTensorRef.objects.bulk_create([StoredTensorRef(tensor=t, model=row) for t in tensors])
        row.storage = ModelEntry.Storage.COMPRESSED
        row.store_manifest = summary.manifest
        row.save(update_fields=["storage", "store_manifest"])
        if row.source == ModelEntry.Source.UPLOAD:
            files_remove_on_commit(dirs=[Path(row.path)])
    return row


def _tensor_refs_release(*, model: ModelEntry) -> int:
    """Drop the model's refs (inside the caller's transaction); tensors no model needs any more lose their row
    now and their file once the transaction commits. Returns the object bytes freed."""
    ids = list(StoredTensorRef.objects.filter(model=model).values_list("tensor_id", flat=True))
    # Lock the model's tensors (in one order: no deadlock) so two deletes sharing a tensor count its refs one after
    # the other: the second sees the first's ref gone and frees the tensor.
    list(StoredTensor.objects.select_for_update().filter(pk__in=ids).order_by("pk").values_list("pk", flat=True))
    StoredTensorRef.objects.filter(model=model).delete()
    unused = list(StoredTensor.objects.filter(pk__in=ids, refs__isnull=True).values_list("pk", "key", "stored_bytes"))
    StoredTensor.objects.filter(pk__in=[pk for pk, _, _ in unused]).delete()
    keys, team_id = [key for _, key, _ in unused], model.team_id
    transaction.on_commit(lambda: tensor_objects_remove(team_id=team_id, keys=keys))
    return sum(size for _, _, size in unused)


def tensor_objects_remove(*, team_id: int, keys: list[str]) -> list[str]:
    """Remove the object files of ``keys`` that no ``StoredTensor`` row of the team names (a store may have
    taken one up again since its row went). Best effort: what fails here is left to ``tensor_store_sweep``."""
    from modelcodecs.tensorstore import remove_objects

    if not keys:
        return []
    try:
        with transaction.atomic():
            _team_lock(team_id)
            needed = set(StoredTensor.objects.filter(team_id=team_id, key__in=keys).values_list("key", flat=True))
            return remove_objects(tensor_store_root(team_id), [k for k in keys if k not in needed])
    except Exception:  # noqa: BLE001 - the sweep removes them later
        logger.warning("could not remove tensor store objects of team %s", team_id, exc_info=True)
        return []


def tensor_store_sweep(*, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[str]:
    """Bring each team's tensor store back in line with its rows: remove object files no row names (left by a
    crash between a delete's commit and its file removal, or by a store job killed before its commit) once older
    than ``min_age_s`` (a running store writes its objects before its rows), and rows no model refers to (with
    their files). A team with a store job in flight is left for the next sweep. Returns ``team/key`` removed."""
    from modelcodecs.tensorstore import iter_object_files, remove_objects

    from webapp.jobs.models import Job

    base = tensor_store_base()
    if not base.is_dir():
        return []
    removed = []
    busy = set(Job.objects.filter(kind=Job.Kind.STORE).exclude(status__in=Job.TERMINAL)
               .values_list("team_id", flat=True))
    for folder in sorted(base.iterdir()):
        if not folder.name.isdigit() or int(folder.name) in busy:
            continue
        team_id = int(folder.name)
        with transaction.atomic():
            if not Team.objects.filter(pk=team_id).exists():
                if time.time() - folder.stat().st_mtime >= min_age_s:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(f"{team_id}/*")
                continue
            _team_lock(team_id)
            unused = list(StoredTensor.objects.filter(team_id=team_id, refs__isnull=True).values_list("pk", "key"))
            StoredTensor.objects.filter(pk__in=[pk for pk, _ in unused]).delete()
            dropped = {key for _, key in unused}
            known = set(StoredTensor.objects.filter(team_id=team_id).values_list("key", flat=True))
            now = time.time()
            orphans = [key for key, path in iter_object_files(folder)
                       if key not in known and (key in dropped or now - path.stat().st_mtime >= min_age_s)]
            stale_tmp = [p for p in (folder / "objects").glob("*/.*.tmp") if now - p.stat().st_mtime >= min_age_s]
            removed += [f"{team_id}/{key}" for key in remove_objects(folder, orphans)]
        for path in stale_tmp:
            path.unlink(missing_ok=True)
    return removed


def model_restored_expire(*, now: float | None = None) -> list[str]:
    """Remove restored copies of compressed models unused for ``DELTAVAULT_RESTORED_TTL_HOURS`` (a queued or
    running job of the model keeps its copy), copies of an older manifest and of models that no longer exist.
    Returns the folder names removed (the periodic ``housekeeping`` task calls this)."""
    from django.db.models import Q

    from webapp.jobs.models import Job

    root = Path(settings.DELTAVAULT_RESTORED_DIR) / "models"
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    ttl_s = float(settings.DELTAVAULT_RESTORED_TTL_HOURS) * 3600
    removed = []
    for path in sorted(root.iterdir()):
        model_id = path.name.split("-", 1)[0]
        if path.name.startswith(".partial-"):
            if now - path.stat().st_mtime >= ORPHAN_MIN_AGE_S:  # left by a killed restore
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
            continue
        model = ModelEntry.objects.filter(pk=int(model_id)).first() if model_id.isdigit() else None
        current = model is not None and model_restored_cache(model) == path
        in_use = current and Job.objects.exclude(status__in=Job.TERMINAL).filter(
            Q(model=model) | Q(pair__base=model) | Q(pair__finetuned=model)
            | Q(artifact__pair__base=model) | Q(artifact__pair__finetuned=model)).exists()
        if not current or (not in_use and now - path.stat().st_mtime >= ttl_s):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed
