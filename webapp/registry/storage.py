"""Artifact files in the ``artifacts`` storage (any Django storage backend; a local one by default).

The codecs need a seekable local file, so a storage without local paths (S3 via django-storages) is downloaded to a
temporary copy for reading and uploaded to when storing: a settings change, not a code change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import Storage, storages

from webapp.core.exceptions import ApplicationError
from webapp.registry.models import Artifact, ModelEntry


def artifact_storage() -> Storage:
    return storages["artifacts"]


def file_sha256(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _check_recorded_hash(artifact: Artifact, path: Path) -> None:
    if artifact.sha256 and file_sha256(path)[1] != artifact.sha256:
        raise ApplicationError(f"The file of artifact #{artifact.pk} is not the one the registry recorded "
                               "(its sha256 differs): it was changed or replaced after it was stored.")


@contextmanager
def artifact_local_file(artifact: Artifact) -> Iterator[Path]:
    """A local path to the artifact: the file itself on a local storage, else a temporary download removed on
    exit. Its sha256 is checked against the one recorded when it was stored before anyone reads it."""
    storage = artifact_storage()
    if not storage.exists(artifact.storage_name):
        raise ApplicationError(f"The file of artifact #{artifact.pk} is missing from storage.")
    try:
        local_path = Path(storage.path(artifact.storage_name))
    except NotImplementedError:
        local_path = None
    if local_path is not None:
        _check_recorded_hash(artifact, local_path)
        yield local_path
        return
    tmp_dir = Path(settings.DELTAVAULT_TMP_DIR)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    local = tmp_dir / f"download-{uuid.uuid4().hex}.dvz"
    try:
        with storage.open(artifact.storage_name, "rb") as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        _check_recorded_hash(artifact, local)
        yield local
    finally:
        local.unlink(missing_ok=True)


TENSOR_STORE_PREFIX = "tensors/"


def tensor_store_base() -> Path:
    """``<artifacts storage>/tensors/``: the tensor stores of every team. Needs a storage with local paths."""
    try:
        return Path(artifact_storage().path(TENSOR_STORE_PREFIX))
    except NotImplementedError:
        raise ApplicationError("Storing models compressed needs an artifacts storage with local paths.") from None


def tensor_store_root(team_id: int) -> Path:
    """The team's tensor store (``modelcodecs.tensorstore``), one per team: a tensor is never shared across
    teams."""
    return tensor_store_base() / str(int(team_id))


def model_restored_cache(model: ModelEntry) -> Path:
    """Where a compressed model is restored for readers: named after the model and its manifest, so a model
    stored again never reuses a copy of the old bytes."""
    digest = hashlib.sha256(json.dumps(model.store_manifest, sort_keys=True).encode()).hexdigest()[:16]
    return Path(settings.DELTAVAULT_RESTORED_DIR) / "models" / f"{model.pk}-{digest}"


def model_local_folder(model: ModelEntry, *, threads: int | None = None, cancel=None, log=None) -> Path:
    """The folder to read ``model``'s files from; every reader of a model's files goes through here.

    A model stored as a folder is read where it is. A model stored compressed is read from its own folder when it
    was registered from a server path and that folder is unchanged; otherwise it is restored from the team's
    tensor store into the restored cache (byte-exact, each file's sha256 checked), once: later readers reuse the
    copy and refresh its time, and ``model_restored_expire`` removes it after ``DELTAVAULT_RESTORED_TTL_HOURS``
    unused. ``log(message)`` hears about a restore before it starts; ``cancel()`` may stop it."""
    from modelcodecs import CorruptArtifactError
    from modelcodecs.tensorstore import restore_model

    from webapp.registry.selectors import model_folder_changes

    if model.storage != ModelEntry.Storage.COMPRESSED:
        return Path(model.path)
    if model.source == ModelEntry.Source.PATH and not model_folder_changes(model=model):
        return Path(model.path)
    target = model_restored_cache(model)
    if not target.is_dir():
        if log is not None:
            log(f"restoring model {model.name} from the tensor store ({model.total_bytes:,} bytes)")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".partial-{target.name}-{uuid.uuid4().hex[:8]}")
        try:
            restore_model(model.store_manifest, tensor_store_root(model.team_id), partial,
                          threads=threads or settings.DELTAVAULT_JOB_THREADS, cancel=cancel)
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # a concurrent reader put its copy in place first: use that one
                raise
        except CorruptArtifactError as exc:
            raise ApplicationError(f"Model {model.name} cannot be restored from the tensor store: {exc}",
                                   extra={"model": model.pk}) from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    os.utime(target)  # last use: the cache expires this long after it
    return target


def artifact_store(*, local: Path, name: str) -> str:
    """Move a finished artifact file into the artifacts storage; return its storage name. A local storage gets a
    rename; any other storage an upload."""
    storage = artifact_storage()
    try:
        final_path = Path(storage.path(name))
    except NotImplementedError:
        with open(local, "rb") as fh:
            return storage.save(name, File(fh, name=os.path.basename(name)))
    final_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, final_path)
    return name
