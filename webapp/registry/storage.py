"""Artifact files in the ``artifacts`` storage (any Django storage backend; a local one by default).

The codecs need a seekable local file, so a storage without local paths (S3 via django-storages) is downloaded to a
temporary copy for reading and uploaded to when storing: a settings change, not a code change.
"""

from __future__ import annotations

import hashlib
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
from webapp.registry.models import Artifact


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
