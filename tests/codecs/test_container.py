"""The .dvz container: layout, strict reading, corruption of each section, pack/unpack round trips."""

from __future__ import annotations

import json
import os
import struct
import zlib

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcodecs.abc import DTYPE_SIZES, EncodedChunk, TensorSpec
from modelcodecs.container import (FOOTER, HEADER, MAGIC, ContainerReader, ContainerWriter, pack_chunks,
                                   unpack_chunks, validate_index)
from modelcodecs.errors import CorruptArtifactError

payloads = st.lists(st.binary(max_size=300), max_size=6)


def _write(path, chunk_payloads, size=None):
    """A minimal valid container: one raw file whose single segment holds the given chunks."""
    writer = ContainerWriter(path)
    records = [writer.write_chunk(EncodedChunk("raw", p, {"n": len(p)})) for p in chunk_payloads]
    total = sum(len(p) for p in chunk_payloads)
    index = {"format": 1, "codec": {"id": "zstd"}, "lossless": True, "original_bytes": total,
             "files": [{"name": "f.bin", "size": total, "sha256": "0" * 64,
                        "segments": [{"size": total, "chunks": records}]}], "tensors": []}
    return writer.finish(index), records


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk_payloads=payloads)
def test_writer_reader_round_trip(tmp_path, chunk_payloads):
    path = tmp_path / f"c-{os.urandom(4).hex()}.dvz"
    size, records = _write(path, chunk_payloads)
    assert path.stat().st_size == size
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    with ContainerReader(path) as reader:
        assert reader.index["files"][0]["segments"][0]["chunks"] == records
        # chunks are read back by record, in any order, without touching the others
        for rec, payload in reversed(list(zip(records, chunk_payloads))):
            assert reader.read_chunk(rec).payload == payload


def test_stored_chunks_read_and_check_their_payload_when_used(tmp_path):
    """A decoder gets chunks whose payload is read from the file (and crc-checked) on use, not when listed."""
    path = tmp_path / "a.dvz"
    _, records = _write(path, [b"payload-one", b"payload-two"])
    with ContainerReader(path) as reader:
        chunk = reader.read_chunk(records[0])
        assert (chunk.coder, chunk.meta, chunk.nbytes) == ("raw", {"n": 11}, 11)
        assert chunk.payload == b"payload-one"
        data = bytearray(path.read_bytes())
        data[records[0]["offset"]] ^= 1  # same file, same inode: the open reader sees the change
        path.write_bytes(data)
        assert chunk.nbytes == 11  # from the index record
        with pytest.raises(CorruptArtifactError, match="crc32"):
            chunk.payload


def test_layout_header_and_footer(tmp_path):
    path = tmp_path / "a.dvz"
    _write(path, [b"hello", b"world"])
    data = path.read_bytes()
    magic, version, flags, reserved = HEADER.unpack(data[:HEADER.size])
    assert (magic, version, flags, reserved) == (MAGIC, 2, 0, bytes(8))
    assert data[HEADER.size:HEADER.size + 10] == b"helloworld"
    offset, length, digest, end = FOOTER.unpack(data[-FOOTER.size:])
    assert end == b"DVZ-END\x00"
    assert offset == HEADER.size + 10 and offset + length + FOOTER.size == len(data)
    index = json.loads(zstandard.ZstdDecompressor().decompress(data[offset:offset + length]))
    assert index["files"][0]["name"] == "f.bin"


def test_writer_abort_removes_partial(tmp_path):
    writer = ContainerWriter(tmp_path / "x.dvz")
    writer.write_chunk(EncodedChunk("raw", b"abc", {}))
    assert writer.tmp_path.exists()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_every_truncation_is_detected(tmp_path):
    path = tmp_path / "a.dvz"
    _write(path, [b"x" * 50, b"y" * 20])
    data = path.read_bytes()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptArtifactError):
            with ContainerReader(path) as reader:
                for seg in reader.index["files"][0]["segments"]:
                    for rec in seg["chunks"]:
                        reader.read_payload(rec)


def test_every_flipped_byte_is_detected(tmp_path):
    """Header, payload, index and footer: each single-byte flip raises, none passes silently."""
    path = tmp_path / "a.dvz"
    _write(path, [b"payload-one", b"payload-two"])
    data = path.read_bytes()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x5A
        path.write_bytes(bad)
        with pytest.raises(CorruptArtifactError):
            with ContainerReader(path) as reader:
                for rec in reader.index["files"][0]["segments"][0]["chunks"]:
                    reader.read_payload(rec)


def test_not_an_artifact(tmp_path):
    for content in (b"", b"hello", b"PK\x03\x04" + bytes(100), os.urandom(200)):
        path = tmp_path / "x.dvz"
        path.write_bytes(content)
        with pytest.raises(CorruptArtifactError):
            ContainerReader(path)
    with pytest.raises(CorruptArtifactError, match="cannot open"):
        ContainerReader(tmp_path / "missing.dvz")


def test_future_format_version_is_refused(tmp_path):
    path = tmp_path / "a.dvz"
    _write(path, [b"abc"])
    data = bytearray(path.read_bytes())
    data[4:6] = struct.pack("<H", 99)
    path.write_bytes(data)
    with pytest.raises(CorruptArtifactError, match="version 99"):
        ContainerReader(path)


def _valid_index():
    return {"format": 1, "codec": {"id": "zstd"}, "lossless": True, "original_bytes": 8,
            "files": [{"name": "model.safetensors", "size": 8, "sha256": "a" * 64, "segments": [{"tensor": 0}]}],
            "tensors": [{"name": "w", "dtype": "F32", "shape": [2], "sha256": "b" * 64, "base": None,
                         "chunks": [{"coder": "raw", "offset": 16, "length": 8, "crc32": 1, "meta": {"n": 2}}]}]}


@pytest.mark.parametrize("mutate, message", [
    (lambda i: i.pop("codec"), "codec"),
    (lambda i: i["tensors"][0].update(dtype="F128"), "dtype"),
    (lambda i: i["tensors"][0].update(shape=[-2]), "shape"),
    (lambda i: i["tensors"][0].update(shape=[True]), "shape"),
    (lambda i: i["tensors"][0].update(sha256="xyz"), "sha256"),
    (lambda i: i["tensors"][0]["chunks"][0].update(offset=1000), "outside"),
    (lambda i: i["tensors"][0]["chunks"][0].update(offset=0), "outside"),
    (lambda i: i["tensors"][0]["chunks"][0].update(length=-1), "outside"),
    (lambda i: i["tensors"][0]["chunks"][0].update(crc32=1 << 33), "outside"),
    (lambda i: i["tensors"][0]["chunks"][0].update(extra=1), "malformed chunk"),
    (lambda i: i["tensors"][0].update(same_as=0), "duplicate"),
    (lambda i: i["tensors"][0].update(base="w", base_sha256="nope"), "base"),
    (lambda i: i["files"][0].update(name="../escape"), "unsafe"),
    (lambda i: i["files"][0].update(name="/etc/passwd"), "unsafe"),
    (lambda i: i["files"][0].update(size=9), "add up"),
    (lambda i: i.update(original_bytes=99), "original_bytes"),
    (lambda i: i["files"][0].update(segments=[{"tensor": 5}]), "segment"),
    (lambda i: i.update(original_bytes=16) or i["files"][0].update(segments=[{"tensor": 0}, {"tensor": 0}], size=16),
     "exactly one"),
    (lambda i: i.update(original_bytes=16) or i["files"].append(dict(i["files"][0])), "twice"),
    (lambda i: i.update(original_bytes=16) or i["files"].append({**i["files"][0], "name": "model.safetensors/x",
                                                                  "segments": [{"size": 8, "chunks": []}]}),
     "folder"),
])
def test_validate_index_rejects(mutate, message):
    index = _valid_index()
    validate_index(index, 24)
    mutate(index)
    with pytest.raises(CorruptArtifactError, match=message):
        validate_index(index, 24)


def test_validate_index_duplicate_reference():
    index = _valid_index()
    index["tensors"].append({"name": "w2", "dtype": "F32", "shape": [2], "sha256": "b" * 64, "base": None,
                             "same_as": 0})
    index["files"][0]["segments"].append({"tensor": 1})
    index["files"][0]["size"] = index["original_bytes"] = 16
    validate_index(index, 24)
    index["tensors"][1]["shape"] = [1, 2]  # same bytes, other shape: not what dedup records
    with pytest.raises(CorruptArtifactError, match="duplicate"):
        validate_index(index, 24)
    index["tensors"][1].update(shape=[2], same_as=1)  # a reference to itself
    with pytest.raises(CorruptArtifactError, match="duplicate"):
        validate_index(index, 24)


# -- pack_chunks / unpack_chunks -------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(dtype=st.sampled_from(sorted(DTYPE_SIZES)), shape=st.lists(st.integers(0, 5), max_size=3),
       chunk_payloads=payloads, meta=st.dictionaries(st.text(max_size=4), st.integers(-5, 5), max_size=2))
def test_pack_unpack_round_trip(dtype, shape, chunk_payloads, meta):
    spec = TensorSpec("buffer", dtype, tuple(shape))
    chunks = [EncodedChunk(f"c{i}", p, meta) for i, p in enumerate(chunk_payloads)]
    got_spec, got = unpack_chunks(pack_chunks(spec, chunks))
    assert got_spec == spec
    assert [(c.coder, c.payload, c.meta) for c in got] == [(c.coder, c.payload, c.meta) for c in chunks]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_unpack_mutations_never_crash(data):
    spec = TensorSpec("buffer", "F32", (4,))
    packed = bytearray(pack_chunks(spec, [EncodedChunk("raw", bytes(range(16)), {"n": 4})]))
    pos = data.draw(st.integers(0, len(packed) - 1))
    packed[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(packed)))
    try:
        got_spec, chunks = unpack_chunks(bytes(packed[:cut]))
    except CorruptArtifactError:
        return
    # a mutation that survived hit only JSON whitespace-equivalent text: the payload is intact and checked
    assert all(zlib.crc32(c.payload) == zlib.crc32(bytes(range(16))) for c in chunks)


def test_unpack_rejects_bad_buffers():
    good = pack_chunks(TensorSpec("buffer", "U8", (3,)), [EncodedChunk("raw", b"abc", {"n": 3})])
    header_len = struct.unpack("<I", good[4:8])[0]
    meta = json.loads(good[8:8 + header_len])
    for bad_meta in ({**meta, "dtype": "X"}, {**meta, "shape": [-1]}, {**meta, "chunks": [["raw", "3", 0, {}]]},
                     {**meta, "chunks": "no"}, [1, 2], {**meta, "extra": 1}):
        blob = json.dumps(bad_meta).encode()
        with pytest.raises(CorruptArtifactError):
            unpack_chunks(b"DVZB" + struct.pack("<I", len(blob)) + blob + b"abc")
    with pytest.raises(CorruptArtifactError, match="trailing"):
        unpack_chunks(good + b"x")
    with pytest.raises(CorruptArtifactError, match="truncated"):
        unpack_chunks(good[:-1])


def test_overlapping_chunks_are_refused():
    index = _valid_index()
    index["tensors"].append({"name": "w2", "dtype": "F32", "shape": [2], "sha256": "c" * 64, "base": None,
                             "chunks": [dict(index["tensors"][0]["chunks"][0])]})
    index["files"][0]["segments"].append({"tensor": 1})
    index["files"][0]["size"] = index["original_bytes"] = 16
    with pytest.raises(CorruptArtifactError, match="overlap"):
        validate_index(index, 24)
    index["tensors"][1]["chunks"][0]["offset"] = 20
    with pytest.raises(CorruptArtifactError, match="outside"):
        validate_index(index, 24)  # 20 + 8 > 24
    index["tensors"][1]["chunks"][0].update(offset=24, length=0)
    validate_index(index, 24)  # empty chunks overlap nothing
