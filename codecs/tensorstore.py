"""A content-addressed store of tensors: every distinct tensor of the models stored under one root is kept once.

Each object ``<root>/objects/<key[:2]>/<key>`` holds one tensor (or one byte range that is not a tensor: a
safetensors header, a config or tokenizer file) coded losslessly by ``fmdelta-nobase`` (bit fields for floats,
byte planes + zstd for integers and bytes, raw when coding does not pay) and serialised with
:func:`modelcodecs.container.pack_chunks` (a crc32 per chunk) behind a small header that repeats the key and the
body's length and crc32. An object is written to a temporary name, fsynced and renamed, so a crash never leaves a
partial object under its key.

``key`` is the sha256 of the tensor's dtype, shape and bytes: a cryptographic hash, because the models of one root
come from many uploaders and a crafted collision must not let one model's tensor stand in for another's. Restoring
an object checks its decoded bytes against its key, and every restored file against its recorded sha256.

A model is stored as a manifest (JSON): each file of the folder in order, as segments that cover it byte for byte
(its header bytes, every gap and padding, each tensor), each segment naming its object. Restoring writes the
segments back in order, so the files come back byte-exact. Memory holds one tensor and its coding at a time.

Which objects a root still needs is the caller's business (the registry counts references per team):
:func:`manifest_keys` lists a manifest's objects, :func:`remove_objects` deletes objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._threads import resolve_threads
from .abc import DTYPE_SIZES, CancelCheck, ProgressCallback, TensorSpec, check_cancel
from .container import pack_chunks, unpack_chunks
from .errors import CorruptArtifactError, ModelFormatError
from .fmdelta import FMDeltaNoBaseCodec
from .hfio import ModelFolder, TensorRef

MANIFEST_FORMAT = "deltavault-tensorstore"
MANIFEST_VERSION = 1
OBJECT_MAGIC = b"DVTO"
OBJECT_VERSION = 1
_OBJECT_HEAD = struct.Struct("<4sBI")  # magic, version, header length
# A byte range that is not a tensor (a large non-weight file) is stored in objects of at most this many bytes.
RAW_PIECE_BYTES = 64 << 20
_KEY_LENGTH = 64


def tensor_key(dtype: str, shape: Iterable[int], data) -> str:
    """The key of a tensor: sha256 of its dtype, shape and bytes."""
    digest = hashlib.sha256(f"dvts1|{dtype}|{','.join(map(str, shape))}|".encode())
    digest.update(data)
    return digest.hexdigest()


def object_path(root: str | os.PathLike, key: str) -> Path:
    if len(key) != _KEY_LENGTH or not all(c in "0123456789abcdef" for c in key):
        raise CorruptArtifactError(f"not a tensor store key: {key!r}")
    return Path(root) / "objects" / key[:2] / key


def iter_object_files(root: str | os.PathLike) -> Iterator[tuple[str, Path]]:
    """Every object file under ``root`` as (key, path); temporary files of writes in progress are skipped."""
    objects = Path(root) / "objects"
    if not objects.is_dir():
        return
    for folder in sorted(objects.iterdir()):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if len(path.name) == _KEY_LENGTH and path.name.startswith(folder.name):
                    yield path.name, path


def write_object(root: str | os.PathLike, key: str, spec: TensorSpec, data, *, threads: int = 1,
                 cancel: CancelCheck | None = None) -> int:
    """Code ``data`` (the bytes of ``spec``) into the object ``key``, atomically; returns the object's size."""
    chunks = list(FMDeltaNoBaseCodec().encode_tensor(spec, memoryview(data), None, threads=threads, cancel=cancel))
    body = pack_chunks(spec, chunks)
    header = json.dumps({"key": key, "dtype": spec.dtype, "shape": list(spec.shape), "body_bytes": len(body),
                         "body_crc32": zlib.crc32(body)}, separators=(",", ":")).encode()
    path = object_path(root, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(_OBJECT_HEAD.pack(OBJECT_MAGIC, OBJECT_VERSION, len(header)))
            fh.write(header)
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return _OBJECT_HEAD.size + len(header) + len(body)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_object(root: str | os.PathLike, key: str, spec: TensorSpec, *, threads: int | None = 1,
                where: str = "") -> bytearray:
    """Decode the object ``key`` (expected to hold ``spec``) and check its bytes against the key. A missing or
    damaged object raises :class:`CorruptArtifactError` naming ``where`` (the tensor and file)."""
    where = where or f"tensor {spec.name!r}"
    path = object_path(root, key)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CorruptArtifactError(f"{where}: its stored object {key} is missing") from None
    try:
        magic, version, header_len = _OBJECT_HEAD.unpack_from(raw)
        if magic != OBJECT_MAGIC or version != OBJECT_VERSION:
            raise ValueError("bad magic or version")
        header = json.loads(raw[_OBJECT_HEAD.size:_OBJECT_HEAD.size + header_len])
        body = memoryview(raw)[_OBJECT_HEAD.size + header_len:]
        if (header.get("key") != key or header.get("dtype") != spec.dtype
                or header.get("shape") != list(spec.shape)):
            raise ValueError("its header describes another tensor")
        if header.get("body_bytes") != len(body) or header.get("body_crc32") != zlib.crc32(body):
            raise ValueError("its body is truncated or altered (length or crc32 differs)")
        stored_spec, chunks = unpack_chunks(bytes(body))
        if stored_spec.dtype != spec.dtype or stored_spec.shape != spec.shape:
            raise ValueError("its chunks describe another tensor")
    except (struct.error, ValueError, TypeError, AttributeError, CorruptArtifactError) as exc:
        raise CorruptArtifactError(f"{where}: its stored object {key} is corrupt: {exc}") from None
    out = bytearray(spec.nbytes)
    try:
        FMDeltaNoBaseCodec().decode_tensor(spec, chunks, None, memoryview(out), threads=threads)
    except (CorruptArtifactError, ModelFormatError) as exc:
        raise CorruptArtifactError(f"{where}: its stored object {key} is corrupt: {exc}") from None
    if tensor_key(spec.dtype, spec.shape, out) != key:
        raise CorruptArtifactError(f"{where}: its stored object {key} decodes to other bytes (hash mismatch)")
    return out


def remove_objects(root: str | os.PathLike, keys: Iterable[str]) -> list[str]:
    """Delete these objects (missing ones are skipped); returns the keys whose files were removed."""
    removed = []
    for key in keys:
        try:
            object_path(root, key).unlink()
        except FileNotFoundError:
            continue
        removed.append(key)
    return removed


# -- models ----------------------------------------------------------------------------------------------------

@dataclass
class StoreSummary:
    """What :func:`store_model` did: the manifest, and per object its logical and stored size (``objects``)."""

    manifest: dict
    logical_bytes: int = 0  # the model's files, as they are
    written_bytes: int = 0  # object bytes this call wrote (new to the root)
    deduplicated_bytes: int = 0  # logical bytes of segments whose object was there already (or repeated)
    new_keys: list[str] = field(default_factory=list)
    objects: dict[str, dict] = field(default_factory=dict)  # key -> {"logical_bytes", "stored_bytes"}
    tensors_done: int = 0
    tensors_total: int = 0

    def as_dict(self) -> dict:
        return {"logical_bytes": self.logical_bytes, "written_bytes": self.written_bytes,
                "deduplicated_bytes": self.deduplicated_bytes, "tensors": self.tensors_total,
                "new_objects": len(self.new_keys),
                "objects": len(self.objects),
                "stored_bytes": sum(o["stored_bytes"] for o in self.objects.values())}


def _segment_pieces(folder: ModelFolder, plan) -> Iterator[tuple[TensorSpec, TensorRef | None, object]]:
    """(spec, tensor or None, reader) for each piece of a file, in file order; byte ranges are split into pieces
    of at most RAW_PIECE_BYTES so memory stays bounded."""
    for seg in plan.segments:
        if isinstance(seg, TensorRef):
            yield seg.spec, seg, (lambda ref=seg: folder.read_tensor(ref))
            continue
        start, end = seg
        for offset in range(start, end, RAW_PIECE_BYTES):
            stop = min(end, offset + RAW_PIECE_BYTES)
            spec = TensorSpec(f"{plan.name}[{offset}:{stop}]", "U8", (stop - offset,))
            yield spec, None, (lambda a=offset, b=stop: folder.read_range(plan.name, a, b))


def store_model(model_dir: str | os.PathLike, root: str | os.PathLike, *, threads: int | None = 1,
                progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                on_tensor: Callable[[StoreSummary], None] | None = None,
                rewrite: Iterable[str] = ()) -> StoreSummary:
    """Store every file of ``model_dir`` in the tensor store at ``root``; objects already there are not written
    again, except the keys in ``rewrite`` (found missing by the caller). ``progress(done, total, stage)`` counts
    logical bytes; ``on_tensor(summary)`` is called after each tensor, with the figures so far.

    Tensors are read, hashed and coded on ``threads`` threads in the pipeline's work window (at most
    ``2 * threads`` tensors and 64 MB ahead of the one being recorded; a larger tensor alone, its chunks coded in
    parallel), and recorded in file order, each file's sha256 computed on the way."""
    from .pipeline import WINDOW_BYTES, _run_ordered, _SharedWork

    rewrite = set(rewrite)
    nthreads = resolve_threads(threads)

    def prepare(piece):
        _, spec, _, read = piece
        check_cancel(cancel)
        data = read()
        key = tensor_key(spec.dtype, spec.shape, data)
        path = object_path(root, key)
        if key not in rewrite and path.is_file():
            return data, key, path.stat().st_size, False
        inner = nthreads if spec.nbytes > WINDOW_BYTES else 1  # a window's worth of tensors is parallel enough
        return data, key, write_object(root, key, spec, data, threads=inner, cancel=cancel), True

    with ModelFolder(model_dir) as folder, _SharedWork(1, nthreads) as shared:
        total = folder.total_bytes
        manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "key": "sha256(dtype, shape, bytes)",
                    "codec": FMDeltaNoBaseCodec().get_config(), "logical_bytes": total, "files": []}
        summary = StoreSummary(manifest=manifest, logical_bytes=total,
                               tensors_total=sum(1 for _ in folder.iter_tensors()))
        pieces = [(index, *piece) for index, plan in enumerate(folder.files)
                  for piece in _segment_pieces(folder, plan)]
        results = _run_ordered(pieces, prepare, lambda piece: 2 * piece[1].nbytes, shared, threading.Event())
        done = 0
        file_digest, segments = hashlib.sha256(), []
        for position, plan in enumerate(folder.files):
            for _, spec, tensor, _ in (piece for piece in pieces if piece[0] == position):
                data, key, stored, written = next(results)
                file_digest.update(data)
                del data
                segment = {"key": key, "dtype": spec.dtype, "shape": list(spec.shape)}
                if tensor is not None and tensor.named:
                    segment["tensor"] = tensor.name
                segments.append(segment)
                if key in summary.objects:  # a tied or repeated tensor: once is enough
                    summary.deduplicated_bytes += spec.nbytes
                else:
                    summary.objects[key] = {"logical_bytes": spec.nbytes, "stored_bytes": stored}
                    if written:
                        summary.written_bytes += stored
                        summary.new_keys.append(key)
                    else:
                        summary.deduplicated_bytes += spec.nbytes
                done += spec.nbytes
                if progress is not None:
                    progress(done, total, f"storing {plan.name}")
                if tensor is not None:
                    summary.tensors_done += 1
                    if on_tensor is not None:
                        on_tensor(summary)
            summary.manifest["files"].append({"name": plan.name, "size": plan.size, "kind": plan.kind,
                                              "sha256": file_digest.hexdigest(), "segments": segments})
            file_digest, segments = hashlib.sha256(), []
    return summary


def manifest_keys(manifest: dict) -> list[str]:
    """The distinct objects a manifest needs, in first-use order."""
    seen: dict[str, None] = {}
    for entry in _manifest_files(manifest):
        for segment in entry["segments"]:
            seen.setdefault(segment["key"], None)
    return list(seen)


def _manifest_files(manifest: dict) -> list[dict]:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptArtifactError("not a tensor store manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise CorruptArtifactError(f"tensor store manifest version {manifest.get('version')!r} is not supported")
    files = manifest.get("files")
    try:
        for entry in files:
            if not isinstance(entry["name"], str) or not isinstance(entry["sha256"], str):
                raise TypeError("bad file entry")
            for segment in entry["segments"]:
                if segment["dtype"] not in DTYPE_SIZES or not isinstance(segment["key"], str):
                    raise TypeError("bad segment")
    except (TypeError, KeyError) as exc:
        raise CorruptArtifactError(f"tensor store manifest is malformed: {exc}") from None
    return files


def _safe_relative(out_dir: Path, name: str) -> Path:
    target = (out_dir / name).resolve()
    if not target.is_relative_to(out_dir.resolve()) or Path(name).is_absolute():
        raise CorruptArtifactError(f"tensor store manifest names a file outside the model folder: {name!r}")
    return target


def restore_model(manifest: dict, root: str | os.PathLike, out_dir: str | os.PathLike, *, threads: int | None = 1,
                  progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> dict:
    """Write the model a manifest describes into ``out_dir`` (created; must not hold those files yet), byte for
    byte; each file is written under a temporary name, its sha256 checked, then renamed. Returns
    ``{file name: sha256}``. A missing or corrupt object raises :class:`CorruptArtifactError` naming the tensor
    and file."""
    files = _manifest_files(manifest)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(int(entry["size"]) for entry in files)
    done = 0
    hashes = {}
    for entry in files:
        target = _safe_relative(out_dir, entry["name"])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as fh:
                for position, segment in enumerate(entry["segments"]):
                    check_cancel(cancel)
                    spec = TensorSpec(segment.get("tensor") or "bytes", segment["dtype"], tuple(segment["shape"]))
                    what = (f"tensor {segment['tensor']!r} of {entry['name']}" if "tensor" in segment
                            else f"{entry['name']} (non-tensor bytes, segment {position})")
                    data = read_object(root, segment["key"], spec, threads=threads, where=what)
                    digest.update(data)
                    fh.write(data)
                    done += len(data)
                    if progress is not None:
                        progress(done, total, f"restoring {entry['name']}")
            if digest.hexdigest() != entry["sha256"]:
                raise CorruptArtifactError(f"{entry['name']}: restored file's sha256 differs from the recorded one")
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        hashes[entry["name"]] = entry["sha256"]
    return hashes
