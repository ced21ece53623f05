"""Reading Hugging Face model folders tensor by tensor, with enough layout to write every file back byte for byte.

A folder is described as a list of :class:`FilePlan`, each a sequence of segments that covers the file exactly:
raw byte ranges (safetensors headers, gaps, the zip structure and pickle of a ``pytorch_model.bin``, whole
config/tokenizer files) and tensors (:class:`TensorRef`). Tensors are read one at a time with positioned reads, so
memory holds at most the tensor being worked on.

Safetensors headers are parsed here, strictly, rather than through ``safe_open``: we need the exact header bytes
and every data offset to restore files identically, and the header is untrusted input. ``pytorch_model.bin``
files are only ever opened with ``torch.load(weights_only=True)``; nothing else is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .abc import DTYPE_SIZES, TensorSpec
from .errors import ModelFormatError, UnsafePathError, UnsupportedDtypeError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors itself refuses headers above 100 MB
HASH_BLOCK = 8 * 1024 * 1024

_TORCH_DTYPES = {
    "float16": "F16", "bfloat16": "BF16", "float32": "F32", "float64": "F64", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2", "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16", "int32": "I32",
    "uint32": "U32", "int64": "I64", "uint64": "U64", "bool": "BOOL",
}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live: ``file`` (relative path) at ``offset`` for ``spec.nbytes`` bytes."""

    spec: TensorSpec
    file: str
    offset: int
    # False for storages of a pytorch_model.bin that no single tensor covers: coded as bytes, never with a base.
    named: bool = True

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class FilePlan:
    """One file of a model folder: its size, kind and the segments (byte ranges or tensors) that make it up."""

    name: str
    size: int
    kind: str  # "safetensors" | "torch-zip" | "raw"
    segments: list[tuple[int, int] | TensorRef] = field(default_factory=list)


class ReadBuffer:
    """A reusable destination for reads. Fresh memory costs a page fault per 4 KB (as much as the read itself), so
    a pipeline that handles one tensor at a time reads each into the same block; a view it returns is valid until
    the next read into it."""

    def __init__(self) -> None:
        self._block = bytearray()

    def view(self, size: int) -> memoryview:
        if len(self._block) < size:
            self._block = bytearray()  # let the old block go before the larger one is allocated
            self._block = bytearray(size)
        return memoryview(self._block)[:size]


class BufferPool:
    """Reusable blocks for the tensors several threads work on at once (fresh memory costs a page fault per 4 KB,
    as much as reading it): ``take(n)`` gives an ``n``-byte view of the smallest free block that fits (or of a new
    one), ``give(view)`` returns its block once nothing uses the view any more. At most ``keep`` blocks wait."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> memoryview:
        with self._lock:
            fits = [i for i, block in enumerate(self._free) if len(block) >= size]
            block = self._free.pop(min(fits, key=lambda i: len(self._free[i]))) if fits else None
        return memoryview(bytearray(size) if block is None else block)[:size]

    def give(self, view: memoryview) -> None:
        with self._lock:
            self._free.append(view.obj)
            if len(self._free) > self.keep:
                del self._free[min(range(len(self._free)), key=lambda i: len(self._free[i]))]


def _read_exact(handle, offset: int, size: int,
                into: ReadBuffer | memoryview | None = None) -> bytearray | memoryview:
    if isinstance(into, memoryview):
        if into.nbytes < size:
            raise ValueError("destination too small")
        buf = into[:size]
    else:
        buf = bytearray(size) if into is None else into.view(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.preadv(handle.fileno(), [view[got:]], offset + got)
        if n == 0:
            raise ModelFormatError(f"{handle.name}: file ended early (truncated?)")
        got += n
    return buf


def _sha256_range(handle, start: int, end: int) -> str:
    """sha256 of a byte range of a file, read in HASH_BLOCK pieces into one buffer."""
    digest = hashlib.sha256()
    block = ReadBuffer()
    for offset in range(start, end, HASH_BLOCK):
        digest.update(_read_exact(handle, offset, min(HASH_BLOCK, end - offset), block))
    return digest.hexdigest()


def _safe_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a sorted relative posix path; symlinks must stay inside ``root``."""
    names = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath, entry)
            if path.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):  # a loop (RuntimeError before Python 3.13) or a dangling link
                    raise ModelFormatError(f"{path.relative_to(root)}: broken symlink or symlink loop") from None
                if not target.is_relative_to(real_root):
                    raise UnsafePathError(f"{path.relative_to(root)}: symlink points outside the model folder")
                if target.is_dir():
                    raise ModelFormatError(f"{path.relative_to(root)}: symlinked folders are not supported")
        for entry in filenames:
            path = Path(dirpath, entry)
            if not path.resolve().is_file():
                raise ModelFormatError(f"{path.relative_to(root)}: not a regular file")
            names.append(path.relative_to(root).as_posix())
    return sorted(names)


def parse_safetensors_header(handle, name: str, size: int) -> FilePlan:
    """Validate a safetensors file's header and lay the file out as segments."""
    if size < 8:
        raise ModelFormatError(f"{name}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", _read_exact(handle, 0, 8))
    if header_len > min(MAX_HEADER_BYTES, size - 8):
        head = bytes(_read_exact(handle, 0, 2))
        hint = " (it looks like a pickle: only torch.load(weights_only=True) on .bin files is allowed)" \
            if head[:1] == b"\x80" or head == b"PK" else ""
        raise ModelFormatError(f"{name}: not a safetensors file: header length {header_len} is impossible{hint}")
    try:
        header = json.loads(bytes(_read_exact(handle, 8, header_len)))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{name}: safetensors header is not valid JSON: {exc}") from None
    except RecursionError:
        raise ModelFormatError(f"{name}: safetensors header is nested too deeply") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{name}: safetensors header is not a JSON object")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors = []
    for tensor_name, entry in header.items():
        if tensor_name == "__metadata__":
            continue
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise ModelFormatError(f"{name}: tensor {tensor_name!r} has a malformed header entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise UnsupportedDtypeError(f"{name}: tensor {tensor_name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ModelFormatError(f"{name}: tensor {tensor_name!r} has a malformed shape {shape!r}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_size):
            raise ModelFormatError(f"{name}: tensor {tensor_name!r} has data offsets outside the file")
        spec = TensorSpec(tensor_name, dtype, tuple(shape))
        if offsets[1] - offsets[0] != spec.nbytes:
            raise ModelFormatError(f"{name}: tensor {tensor_name!r} spans {offsets[1] - offsets[0]} bytes, "
                                   f"{dtype}{shape} needs {spec.nbytes}")
        tensors.append(TensorRef(spec, name, data_start + offsets[0]))
    tensors.sort(key=lambda ref: (ref.offset, ref.spec.nbytes))
    return FilePlan(name, size, "safetensors", _segments(name, size, data_start, tensors))


def _segments(name: str, size: int, first: int, tensors: list[TensorRef]) -> list:
    """Cover [0, size) with raw ranges around the (sorted, non-overlapping) tensors."""
    segments: list = [(0, first)] if first else []
    cursor = first
    for ref in tensors:
        if ref.offset < cursor:
            raise ModelFormatError(f"{name}: tensor {ref.name!r} overlaps the previous one")
        if ref.offset > cursor:
            segments.append((cursor, ref.offset))
        segments.append(ref)
        cursor = ref.offset + ref.spec.nbytes
    if cursor < size:
        segments.append((cursor, size))
    return segments


def _torch_zip_plan(path: Path, name: str, size: int) -> FilePlan:
    """Lay out a ``pytorch_model.bin`` zip: storage entries become tensors, the rest stays raw bytes."""
    import torch  # only .bin checkpoints need torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign or hostile pickles
        raise ModelFormatError(f"{name}: not a loadable weights-only torch checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise ModelFormatError(f"{name}: expected a dict of tensors, got {type(state).__name__}")
    # Identify each storage by the hash of its bytes: safe, and independent of torch's private zip layout.
    # Tensors that cover their whole storage come first, so they claim matching entries before views do.
    by_hash: dict[str, list[TensorSpec]] = {}
    for tensor_name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            continue
        storage = tensor.untyped_storage()
        dtype = _TORCH_DTYPES.get(str(tensor.dtype).removeprefix("torch."))
        if (dtype is None or tensor.storage_offset() != 0 or not tensor.is_contiguous()
                or tensor.numel() * tensor.element_size() != storage.nbytes()):
            continue
        raw = torch.empty(0, dtype=torch.uint8).set_(storage).numpy()
        by_hash.setdefault(hashlib.sha256(raw).hexdigest(), []).append(
            TensorSpec(tensor_name, dtype, tuple(tensor.shape)))
    del state
    tensors = []
    import zipfile  # only for PyTorch .bin checkpoints: it costs start-up time

    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if "/data/" not in info.filename or info.compress_type != zipfile.ZIP_STORED:
                continue
            local = _read_exact(handle, info.header_offset, 30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            offset = info.header_offset + 30 + name_len + extra_len
            candidates = by_hash.get(hashlib.sha256(_read_exact(handle, offset, info.file_size)).hexdigest())
            if candidates:
                tensors.append(TensorRef(candidates.pop(0), name, offset))
            else:  # a storage no single tensor covers (views, unusual dtypes): coded as plain bytes, no base
                spec = TensorSpec(f"{name}:{info.filename}", "U8", (info.file_size,))
                tensors.append(TensorRef(spec, name, offset, named=False))
    tensors.sort(key=lambda r: r.offset)
    return FilePlan(name, size, "torch-zip", _segments(name, size, 0, tensors))


class ModelFolder:
    """A Hugging Face model folder laid out as :class:`FilePlan` s, with tensors readable by name."""

    def __init__(self, root: str | os.PathLike, *, unique_names: bool = True):
        """``unique_names=False`` reads a gradient set, where every step's file holds the same parameter names
        (``tensors`` then maps a name to its first occurrence)."""
        self.root = Path(root)
        if not self.root.is_dir():
            raise ModelFormatError(f"{self.root}: not a folder")
        self.files: list[FilePlan] = []
        names = _safe_files(self.root)
        weight_bins = _weight_bins(self.root, names)
        for name in names:
            path = self.root / name
            size = path.stat().st_size
            if name.endswith(".safetensors"):
                with open(path, "rb") as handle:
                    self.files.append(parse_safetensors_header(handle, name, size))
            elif name in weight_bins:
                if not _is_zip(path):
                    raise ModelFormatError(f"{name}: not a zip-format torch checkpoint (a legacy or foreign "
                                           f"pickle); refusing to unpickle it")
                self.files.append(_torch_zip_plan(path, name, size))
            else:
                # everything else (configs, tokenizers, training_args.bin...) is kept as bytes, never unpickled
                self.files.append(FilePlan(name, size, "raw", [(0, size)] if size else []))
        self.tensors: dict[str, TensorRef] = {}
        for plan in self.files:
            for seg in plan.segments:
                if isinstance(seg, TensorRef) and seg.named:
                    if seg.name in self.tensors and not unique_names:
                        continue
                    if seg.name in self.tensors:
                        raise ModelFormatError(f"tensor {seg.name!r} appears in both {self.tensors[seg.name].file} "
                                               f"and {seg.file}")
                    self.tensors[seg.name] = seg
        if not self.tensors and not any(p.kind != "raw" for p in self.files):
            raise ModelFormatError(f"{self.root}: no model weights (*.safetensors or pytorch_model.bin) found")
        self._handles: dict[str, object] = {}
        self._handles_lock = threading.Lock()  # base fingerprints are hashed on several threads

    # -- reading ------------------------------------------------------------------------------------------------
    def _handle(self, name: str):
        with self._handles_lock:
            if name not in self._handles:
                self._handles[name] = open(self.root / name, "rb")
            return self._handles[name]

    def read_range(self, file: str, start: int, end: int, into: memoryview | None = None) -> bytearray | memoryview:
        return _read_exact(self._handle(file), start, end - start, into)

    def read_tensor(self, ref: TensorRef, into: ReadBuffer | memoryview | None = None,
                    nbytes: int | None = None) -> bytearray | memoryview:
        """The tensor's bytes (its first ``nbytes`` only, when given): a new bytearray, a view of ``into`` (valid
        until its next read), or the first bytes of the view ``into``."""
        size = ref.spec.nbytes if nbytes is None else min(nbytes, ref.spec.nbytes)
        return _read_exact(self._handle(ref.file), ref.offset, size, into)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> ModelFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def total_bytes(self) -> int:
        return sum(plan.size for plan in self.files)

    def iter_tensors(self) -> Iterator[TensorRef]:
        for plan in self.files:
            for seg in plan.segments:
                if isinstance(seg, TensorRef):
                    yield seg

    @property
    def layout(self) -> str:
        kinds = {plan.kind for plan in self.files}
        if "torch-zip" in kinds:
            return "pytorch-bin"
        shards = [p for p in self.files if p.kind == "safetensors"]
        return "sharded-safetensors" if len(shards) > 1 else "safetensors"

    def file_sha256(self, name: str) -> str:
        plan = next(p for p in self.files if p.name == name)
        return _sha256_range(self._handle(name), 0, plan.size)


_SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _weight_bins(root: Path, names: list[str]) -> set[str]:
    """Names of the ``pytorch_model*.bin`` weight files (from the shard index when there is one); also checks
    that every shard a ``*.index.json`` names is present."""
    bins = {n for n in names if n.rsplit("/", 1)[-1].startswith("pytorch_model") and n.endswith(".bin")}
    present = set(names)
    for index_name in _SHARD_INDEXES:
        for name in names:
            if name.rsplit("/", 1)[-1] != index_name:
                continue
            folder = name.rpartition("/")[0]
            try:
                weight_map = json.loads((root / name).read_text())["weight_map"]
                shards = {str(v) for v in weight_map.values()}
            except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
                raise ModelFormatError(f"{name}: not a valid shard index (needs a 'weight_map' object)") from None
            for shard in sorted(shards):
                rel = f"{folder}/{shard}" if folder else shard
                if shard.startswith("/") or ".." in shard.split("/") or rel not in present:
                    raise ModelFormatError(f"{name}: shard {shard!r} is missing from the folder")
                if index_name.startswith("pytorch_model"):
                    bins.add(rel)
    return bins


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def read_model_info(model_dir: str | os.PathLike) -> dict:
    """Describe a model folder: layout, architecture, dtypes, parameter count, sizes and file hashes."""
    with ModelFolder(model_dir) as folder:
        config = {}
        config_path = folder.root / "config.json"
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ModelFormatError(f"config.json is not valid JSON: {exc}") from None
            except RecursionError:
                raise ModelFormatError("config.json is nested too deeply") from None
            if not isinstance(config, dict):
                config = {}
        architectures = config.get("architectures") or [None]
        architecture = architectures[0] if isinstance(architectures, list) else None
        model_type = config.get("model_type")
        dtypes: dict[str, int] = {}
        for ref in folder.tensors.values():
            dtypes[ref.spec.dtype] = dtypes.get(ref.spec.dtype, 0) + 1
        return {
            "layout": folder.layout,
            "architecture": architecture if isinstance(architecture, str) else None,
            "model_type": model_type if isinstance(model_type, str) else None,
            "dtypes": dtypes,
            "parameter_count": sum(ref.spec.numel for ref in folder.tensors.values()),
            "tensor_count": len(folder.tensors),
            "total_bytes": folder.total_bytes,
            "files": [{"name": p.name, "size": p.size, "sha256": folder.file_sha256(p.name)} for p in folder.files],
        }


def compare_models(base_dir: str | os.PathLike, finetuned_dir: str | os.PathLike) -> dict:
    """Which tensors a base and a fine-tune share, and which differ in presence, shape or dtype."""
    with ModelFolder(base_dir) as base, ModelFolder(finetuned_dir) as tuned:
        b, f = base.tensors, tuned.tensors
        shared = [n for n in f if n in b]
        shape_mismatch = [{"name": n, "base": list(b[n].spec.shape), "finetuned": list(f[n].spec.shape)}
                          for n in shared if b[n].spec.shape != f[n].spec.shape]
        dtype_mismatch = [{"name": n, "base": b[n].spec.dtype, "finetuned": f[n].spec.dtype}
                          for n in shared if b[n].spec.dtype != f[n].spec.dtype]
        matching = len(shared) - len({d["name"] for d in shape_mismatch + dtype_mismatch})
        return {
            "shared": len(shared),
            "matching": matching,
            "missing_in_base": sorted(n for n in f if n not in b),
            "missing_in_finetuned": sorted(n for n in b if n not in f),
            "shape_mismatch": shape_mismatch,
            "dtype_mismatch": dtype_mismatch,
            "matching_bytes": sum(f[n].spec.nbytes for n in shared if b[n].spec == f[n].spec),
            "compatible": matching > 0 and matching * 2 >= len(f),
        }
