"""The ``.dvz`` container: one file per compressed model, written as a stream, checked before it is trusted.

Layout::

    header   16 bytes   b"DVZ\\x00" | u16 format version | u16 flags (0) | 8 reserved bytes (must be zero)
    payloads            chunk payloads back to back, in the order they were produced
    index               zstd-compressed JSON: codec config, files, tensors, chunk offsets/lengths/crc32s, hashes
    footer   56 bytes   u64 index offset | u64 index length | sha256 of the index bytes | b"DVZ-END\\x00"

The index is written last so memory stays bounded while payloads stream out; the footer's fixed size lets a reader
find the index without reading the payloads, and decode one tensor alone. Every number read from the file is
checked against the file's real size before use, the index against its sha256 and a strict schema, and each chunk
against its crc32 before a codec sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import zstandard

from .abc import DTYPE_SIZES, EncodedChunk, TensorSpec
from .errors import ConfigError, CorruptArtifactError

MAGIC = b"DVZ\x00"
END_MAGIC = b"DVZ-END\x00"
FORMAT_VERSION = 2
# Version 1 recorded each tensor's and base tensor's sha256; version 2 records their xxh3-128 (the file's sha256
# stays in both). Readers accept both.
READABLE_VERSIONS = (1, 2)
HEADER = struct.Struct("<4sHH8s")
FOOTER = struct.Struct("<QQ32s8s")
MAX_INDEX_BYTES = 1 << 30


class ContainerWriter:
    """Streams chunk payloads to ``<path>.partial-<random>`` and renames to ``path`` on :meth:`finish`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"{self.path}: the output folder {self.path.parent} does not exist")
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder; give the artifact's file name")
        self.tmp_path = self.path.with_name(f"{self.path.name}.partial-{os.urandom(6).hex()}")
        self._file = open(self.tmp_path, "xb")
        self._file.write(HEADER.pack(MAGIC, FORMAT_VERSION, 0, bytes(8)))
        self.offset = HEADER.size

    def write_chunk(self, chunk: EncodedChunk, crc32: int | None = None) -> dict:
        """Write one payload (``crc32``: its crc when the caller computed it already); return its index record."""
        payload = chunk.payload
        record = {"coder": chunk.coder, "offset": self.offset, "length": len(payload),
                  "crc32": zlib.crc32(payload) if crc32 is None else crc32, "meta": chunk.meta}
        self._file.write(payload)
        self.offset += len(payload)
        return record

    def finish(self, index: dict) -> int:
        """Write the index and footer, flush to disk and move the file into place; return its size."""
        blob = zstandard.ZstdCompressor(level=9).compress(json.dumps(index, separators=(",", ":")).encode())
        self._file.write(blob)
        self._file.write(FOOTER.pack(self.offset, len(blob), hashlib.sha256(blob).digest(), END_MAGIC))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp_path, self.path)
        return self.offset + len(blob) + FOOTER.size

    def abort(self) -> None:
        self._file.close()
        self.tmp_path.unlink(missing_ok=True)


class StoredChunk(EncodedChunk):
    """A chunk of an open artifact. Its payload is read and crc-checked each time ``payload`` is used, by the thread
    that uses it: a tensor's chunks are never all in memory at once, and reading overlaps with decoding."""

    def __init__(self, reader: ContainerReader, record: dict):  # noqa: D107 - fields come from the record
        self.coder, self.meta = record["coder"], record["meta"]
        self._reader, self._record = reader, record

    @property
    def payload(self) -> bytes:
        return self._reader.read_payload(self._record)

    @property
    def nbytes(self) -> int:
        return self._record["length"]


class ContainerReader:
    """Opens a ``.dvz`` file, validates header, footer and index, and reads chunks by record."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise CorruptArtifactError(f"{self.path}: cannot open artifact: {exc.strerror}") from None
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.index = self._read_index()
        except BaseException:
            self._file.close()
            raise

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise CorruptArtifactError(f"{self.path}: truncated artifact")
        return data

    def _read_index(self) -> dict:
        if self.size < HEADER.size + FOOTER.size:
            raise CorruptArtifactError(f"{self.path}: too short to be a DeltaVault artifact (truncated?)")
        magic, version, flags, reserved = HEADER.unpack(self._pread(0, HEADER.size))
        if magic != MAGIC:
            raise CorruptArtifactError(f"{self.path}: not a DeltaVault artifact (bad magic)")
        if version not in READABLE_VERSIONS or flags != 0:
            raise CorruptArtifactError(f"{self.path}: unsupported artifact format version {version}.{flags}")
        if reserved != bytes(8):
            raise CorruptArtifactError(f"{self.path}: artifact header is corrupted (reserved bytes are not zero)")
        index_offset, index_length, digest, end = FOOTER.unpack(self._pread(self.size - FOOTER.size, FOOTER.size))
        if end != END_MAGIC:
            raise CorruptArtifactError(f"{self.path}: artifact footer is missing (truncated or corrupted)")
        if index_offset < HEADER.size or index_length > MAX_INDEX_BYTES \
                or index_offset + index_length != self.size - FOOTER.size:
            raise CorruptArtifactError(f"{self.path}: artifact footer points outside the file")
        blob = self._pread(index_offset, index_length)
        if hashlib.sha256(blob).digest() != digest:
            raise CorruptArtifactError(f"{self.path}: artifact index checksum mismatch (corrupted)")
        try:
            index = json.loads(zstandard.ZstdDecompressor().decompress(blob, max_output_size=MAX_INDEX_BYTES))
        except (zstandard.ZstdError, ValueError) as exc:
            raise CorruptArtifactError(f"{self.path}: artifact index is unreadable: {exc}") from None
        except RecursionError:
            raise CorruptArtifactError(f"{self.path}: artifact index is nested too deeply") from None
        self.data_end = index_offset
        validate_index(index, self.data_end)
        return index

    def read_chunk(self, record: dict) -> StoredChunk:
        """The chunk of an index record; its payload is read and checked when it is used."""
        return StoredChunk(self, record)

    def read_payload(self, record: dict) -> bytes:
        payload = self._pread(record["offset"], record["length"])
        if zlib.crc32(payload) != record["crc32"]:
            raise CorruptArtifactError(f"{self.path}: chunk at offset {record['offset']} fails its crc32 check")
        return payload

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- index schema ----------------------------------------------------------------------------------------------

HASH_HEX_LENGTH = {"sha256": 64, "xxh3": 32}


def tensor_hash_keys(version: int) -> tuple[str, str]:
    """The index keys of a tensor's digest and of its base tensor's fingerprint in this format version."""
    return ("sha256", "base_sha256") if version == 1 else ("xxh3", "base_xxh3")


def _fail(what: str) -> None:
    raise CorruptArtifactError(f"artifact index: {what}")


def _is_int(value, low: int = 0, high: int = 1 << 62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _is_hex(value, length: int = 64) -> bool:
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


def _check_chunks(chunks, data_end: int, where: str) -> None:
    if not isinstance(chunks, list):
        _fail(f"{where}: chunks is not a list")
    for rec in chunks:
        if not isinstance(rec, dict) or set(rec) != {"coder", "offset", "length", "crc32", "meta"}:
            _fail(f"{where}: malformed chunk record")
        if not isinstance(rec["coder"], str) or not isinstance(rec["meta"], dict):
            _fail(f"{where}: malformed chunk record")
        if not (_is_int(rec["offset"], HEADER.size) and _is_int(rec["length"])
                and rec["offset"] + rec["length"] <= data_end and _is_int(rec["crc32"], 0, 0xFFFFFFFF)):
            _fail(f"{where}: chunk lies outside the payload area")


def _all_chunks(index: dict):
    for t in index["tensors"]:
        if t.get("same_as") is None:
            yield from t["chunks"]
    for f in index["files"]:
        for seg in f["segments"]:
            yield from seg.get("chunks", [])


def validate_index(index, data_end: int) -> None:
    """Check every field a decoder will rely on, so nothing downstream trusts unchecked input."""
    if not isinstance(index, dict):
        _fail("not an object")
    for key, kind in (("format", int), ("codec", dict), ("lossless", bool), ("files", list), ("tensors", list),
                      ("original_bytes", int)):
        if not isinstance(index.get(key), kind):
            _fail(f"missing or malformed {key!r}")
    if not isinstance(index["codec"].get("id"), str):
        _fail("codec config has no id")
    if index["format"] not in READABLE_VERSIONS:
        _fail(f"unsupported format {index['format']!r}")
    hash_key, base_hash_key = tensor_hash_keys(index["format"])
    length = HASH_HEX_LENGTH[hash_key]
    tensors = index["tensors"]
    for i, t in enumerate(tensors):
        where = f"tensor {i}"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("dtype"), str) \
                or t["dtype"] not in DTYPE_SIZES:
            _fail(f"{where}: malformed name or dtype")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            _fail(f"{where}: malformed shape")
        if not _is_hex(t.get(hash_key), length):
            _fail(f"{where}: malformed {hash_key}")
        base = t.get("base")
        if base is not None and not (isinstance(base, str) and base and _is_hex(t.get(base_hash_key), length)):
            _fail(f"{where}: malformed base reference")
        if ("base_rows" in t or "base_chunks" in t) and not (
                base is not None and shape and _is_int(t.get("base_rows"), 1, shape[0])
                and _is_int(t.get("base_chunks"), 0, len(t.get("chunks") or []))):
            _fail(f"{where}: malformed shared-rows reference")
        same_as = t.get("same_as")
        if same_as is not None:
            if not _is_int(same_as, 0, i - 1) or tensors[same_as].get("same_as") is not None:
                _fail(f"{where}: bad duplicate reference")
            if tensors[same_as]["dtype"] != t["dtype"] or tensors[same_as]["shape"] != shape:
                _fail(f"{where}: duplicate reference to a tensor of another dtype or shape")
        else:
            _check_chunks(t.get("chunks"), data_end, where)
    for i, f in enumerate(index["files"]):
        where = f"file {i}"
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not _is_int(f.get("size")) \
                or not _is_hex(f.get("sha256")) or not isinstance(f.get("segments"), list):
            _fail(f"{where}: malformed entry")
        name = f["name"]
        if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
            _fail(f"{where}: unsafe file name {name!r}")
        total = 0
        for seg in f["segments"]:
            if isinstance(seg, dict) and set(seg) == {"tensor"} and _is_int(seg["tensor"], 0, len(tensors) - 1):
                t = tensors[seg["tensor"]]
                total += TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes
            elif isinstance(seg, dict) and set(seg) == {"size", "chunks"} and _is_int(seg["size"]):
                _check_chunks(seg["chunks"], data_end, where)
                total += seg["size"]
            else:
                _fail(f"{where}: malformed segment")
        if total != f["size"]:
            _fail(f"{where}: segments add up to {total} bytes, the file has {f['size']}")
    if sum(f["size"] for f in index["files"]) != index["original_bytes"]:
        _fail("file sizes do not add up to original_bytes")
    names = [f["name"] for f in index["files"]]
    if len(set(names)) != len(names):
        _fail("a file name appears twice")
    folders = {"/".join(parts[:k]) for parts in (n.split("/") for n in names) for k in range(1, len(parts))}
    if folders & set(names):
        _fail("a file name is also used as a folder")
    spans = sorted((rec["offset"], rec["length"]) for rec in _all_chunks(index) if rec["length"])
    for (a, n), (b, _) in zip(spans, spans[1:]):
        if a + n > b:
            _fail("two chunks overlap (duplicates are stored once and referenced with same_as)")
    used = sorted(seg["tensor"] for f in index["files"] for seg in f["segments"] if "tensor" in seg)
    if used != list(range(len(tensors))):
        _fail("every tensor must be used by exactly one file segment")


# -- one self-contained buffer (numcodecs-style Codec.encode/decode) -------------------------------------------

_BUF_MAGIC = b"DVZB"


def pack_chunks(spec: TensorSpec, chunks: Sequence[EncodedChunk]) -> bytes:
    """Serialise one tensor's chunks with their spec into a self-contained byte string."""
    meta = json.dumps({"dtype": spec.dtype, "shape": list(spec.shape),
                       "chunks": [[c.coder, len(c.payload), zlib.crc32(c.payload), c.meta] for c in chunks]},
                      separators=(",", ":")).encode()
    return b"".join([_BUF_MAGIC, struct.pack("<I", len(meta)), meta, *(c.payload for c in chunks)])


def unpack_chunks(buf: bytes) -> tuple[TensorSpec, list[EncodedChunk]]:
    if len(buf) < 8 or buf[:4] != _BUF_MAGIC:
        raise CorruptArtifactError("not an encoded buffer (bad magic)")
    (meta_len,) = struct.unpack("<I", buf[4:8])
    if 8 + meta_len > len(buf):
        raise CorruptArtifactError("encoded buffer is truncated")
    try:
        meta = json.loads(buf[8:8 + meta_len])
        if not isinstance(meta, dict) or set(meta) != {"dtype", "shape", "chunks"}:
            raise ValueError("unexpected keys")
        shape = meta["shape"]
        if meta["dtype"] not in DTYPE_SIZES or not isinstance(shape, list) or not all(_is_int(d) for d in shape):
            raise ValueError("bad dtype or shape")
        spec = TensorSpec("buffer", meta["dtype"], tuple(shape))
        if not isinstance(meta["chunks"], list):
            raise ValueError("chunks is not a list")
        records = []
        for rec in meta["chunks"]:
            if not (isinstance(rec, list) and len(rec) == 4 and isinstance(rec[0], str) and _is_int(rec[1])
                    and _is_int(rec[2], 0, 0xFFFFFFFF) and isinstance(rec[3], dict)):
                raise ValueError("malformed chunk record")
            records.append(tuple(rec))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise CorruptArtifactError(f"encoded buffer header is malformed: {exc}") from None
    chunks, offset = [], 8 + meta_len
    for coder, length, crc, cmeta in records:
        payload = buf[offset:offset + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            raise CorruptArtifactError("encoded buffer chunk is truncated or corrupted")
        chunks.append(EncodedChunk(coder, payload, cmeta))
        offset += length
    if offset != len(buf):
        raise CorruptArtifactError("encoded buffer has trailing bytes")
    return spec, chunks
