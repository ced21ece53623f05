"""Bad inputs, one by one: each gives its ModelCodecError with a clear message and leaves nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct

import pytest
import zstandard
from common import base_tensors, write_safetensors

import modelcodecs
from modelcodecs.container import FOOTER, HEADER
from modelcodecs.errors import (ConfigError, CorruptArtifactError, ModelFormatError, UnsafePathError,
                                UnsupportedDtypeError, WrongBaseError)

torch = pytest.importorskip("torch")


def _no_output(tmp_path, name="out"):
    leftovers = [p.name for p in tmp_path.iterdir() if p.name == name or ".partial-" in p.name]
    assert leftovers == []


def _sections(path):
    """(name, offset) of one byte inside each section of an artifact."""
    data = path.read_bytes()
    index_offset, index_length, _, _ = FOOTER.unpack(data[-FOOTER.size:])
    return {"magic": 0, "version": 4, "reserved": HEADER.size - 1, "first payload": HEADER.size,
            "last payload": index_offset - 1, "index start": index_offset,
            "index middle": index_offset + index_length // 2, "footer offset": len(data) - FOOTER.size,
            "footer checksum": len(data) - 20, "end magic": len(data) - 1}


def test_truncated_artifact(tmp_path, artifact):
    path, base_dir, _ = artifact
    data = path.read_bytes()
    for cut in (0, 10, HEADER.size, len(data) // 2, len(data) - FOOTER.size, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(CorruptArtifactError, match="truncated|too short|footer"):
            modelcodecs.decompress_model(path, tmp_path / "out", base_dir=base_dir)
        _no_output(tmp_path)


@pytest.mark.parametrize("section", ["magic", "version", "reserved", "first payload", "last payload", "index start",
                                     "index middle", "footer offset", "footer checksum", "end magic"])
def test_flipped_byte_in_each_section(tmp_path, artifact, section):
    path, base_dir, _ = artifact
    data = bytearray(path.read_bytes())
    data[_sections(path)[section]] ^= 0x01
    path.write_bytes(data)
    for call in (lambda: modelcodecs.decompress_model(path, tmp_path / "out", base_dir=base_dir),
                 lambda: modelcodecs.verify_artifact(path, base_dir=base_dir)):
        with pytest.raises(CorruptArtifactError):
            call()
    _no_output(tmp_path)


def test_wrong_base(tmp_path, artifact):
    path, _, _ = artifact
    other = write_safetensors(tmp_path / "other", base_tensors(seed=42))
    with pytest.raises(WrongBaseError, match="differs .* wrong base"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=other)
    _no_output(tmp_path)
    report_error = None
    try:
        modelcodecs.verify_artifact(path, base_dir=other)
    except WrongBaseError as exc:
        report_error = str(exc)
    assert report_error and "'" in report_error  # names the tensor


def test_base_missing_a_tensor(tmp_path, artifact):
    path, _, _ = artifact
    tensors = base_tensors()
    del tensors["layers.0.mlp.up.weight"]
    partial = write_safetensors(tmp_path / "partial", tensors)
    with pytest.raises(WrongBaseError, match="layers.0.mlp.up.weight"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=partial)
    _no_output(tmp_path)


def test_base_with_other_shapes(tmp_path, artifact):
    path, _, _ = artifact
    tensors = base_tensors()
    tensors["layers.0.mlp.up.weight"] = tensors["layers.0.mlp.up.weight"].reshape(16, 32).contiguous()
    reshaped = write_safetensors(tmp_path / "reshaped", tensors)
    with pytest.raises(WrongBaseError, match=r"layers.0.mlp.up.weight.*\[16, 32\]"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=reshaped)
    _no_output(tmp_path)


def test_base_missing_entirely(tmp_path, artifact):
    path, _, _ = artifact
    with pytest.raises(WrongBaseError, match="give the base"):
        modelcodecs.decompress_model(path, tmp_path / "out")
    _no_output(tmp_path)


def test_unsupported_dtype(tmp_path):
    header = json.dumps({"w": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(UnsupportedDtypeError, match="'w'.*C64"):
        modelcodecs.compress_model(tmp_path / "ft", tmp_path / "a.dvz", codec="zstd")
    assert not list(tmp_path.glob("a.dvz*"))


def test_pickle_where_safetensors_expected(tmp_path):
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "model.safetensors").write_bytes(pickle.dumps({"w": 1.0}, protocol=4))
    with pytest.raises(ModelFormatError, match="not a safetensors file.*pickle"):
        modelcodecs.compress_model(tmp_path / "ft", tmp_path / "a.dvz", codec="zstd")
    assert not list(tmp_path.glob("a.dvz*"))


def test_symlink_escaping_the_folder(tmp_path, pair):
    _, ft_dir = pair
    (tmp_path / "secret").write_text("do not read")
    os.symlink(tmp_path / "secret", ft_dir / "tokenizer" / "vocab.txt")
    with pytest.raises(UnsafePathError, match="outside"):
        modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="zstd")
    assert not list(tmp_path.glob("a.dvz*"))


def test_non_empty_output_folder(tmp_path, artifact):
    path, base_dir, _ = artifact
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=base_dir)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):
        modelcodecs.decompress_model(path, tmp_path / "file", base_dir=base_dir)


def test_not_an_artifact(tmp_path, pair):
    _, ft_dir = pair
    for target in (ft_dir / "config.json", ft_dir / "model.safetensors", tmp_path / "missing.dvz"):
        with pytest.raises(CorruptArtifactError):
            modelcodecs.inspect_artifact(target)


def test_verify_against_another_reference(tmp_path, artifact):
    path, base_dir, ft_dir = artifact
    (ft_dir / "README.md").write_text("changed\n")
    report = modelcodecs.verify_artifact(path, base_dir=base_dir, reference_dir=ft_dir)
    assert not report.ok and "README.md" in report.message
    assert [f["name"] for f in report.files if not f["ok"]] == ["README.md"]


def _rewrite_index(path, edit) -> None:
    """Re-seal an artifact with an edited index (a crafted, internally consistent file)."""
    data = path.read_bytes()
    offset, length, _, end = FOOTER.unpack(data[-FOOTER.size:])
    index = json.loads(zstandard.ZstdDecompressor().decompress(data[offset:offset + length]))
    edit(index)
    blob = zstandard.ZstdCompressor().compress(json.dumps(index).encode())
    path.write_bytes(data[:offset] + blob + FOOTER.pack(offset, len(blob), hashlib.sha256(blob).digest(), end))


def test_crafted_index_cannot_turn_off_hash_checks(tmp_path, artifact):
    """An index that claims 'lossy' and records another hash still fails: the codec is registered lossless."""
    path, base_dir, _ = artifact

    def edit(index):
        index["lossless"] = False
        first = next(t for t in index["tensors"] if t.get("chunks"))
        first["xxh3"] = "0" * 32

    _rewrite_index(path, edit)
    with pytest.raises(modelcodecs.VerificationError, match="xxh3"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=base_dir)
    _no_output(tmp_path)


def test_crafted_index_sharing_chunks_is_refused(tmp_path, artifact):
    path, base_dir, _ = artifact

    def edit(index):
        coded = [t for t in index["tensors"] if t.get("chunks")]
        coded[1]["chunks"] = coded[0]["chunks"]

    _rewrite_index(path, edit)
    with pytest.raises(CorruptArtifactError, match="overlap"):
        modelcodecs.inspect_artifact(path)


def test_crafted_index_claiming_a_huge_tensor_is_refused_before_allocating(tmp_path, artifact):
    """A re-sealed index may give a tensor coded without a base any shape; a size its payload cannot decode to is
    refused before memory is allocated for it (here 256 MB, which the machine could allocate)."""
    path, base_dir, _ = artifact

    def edit(index):
        t = next(t for t in index["tensors"] if t["name"] == "score.weight")
        assert t["base"] is None and t["dtype"] == "F32"
        grown = (1 << 22) * 16 * 4 - 3 * 16 * 4
        t["shape"] = [1 << 22, 16]
        position = index["tensors"].index(t)
        entry = next(f for f in index["files"] if {"tensor": position} in f["segments"])
        entry["size"] += grown
        index["original_bytes"] += grown

    _rewrite_index(path, edit)
    with pytest.raises(CorruptArtifactError, match="claims 268,435,456 bytes from"):
        modelcodecs.decompress_model(path, tmp_path / "out", base_dir=base_dir)
    with pytest.raises(CorruptArtifactError, match="claims"):
        modelcodecs.decode_tensor(path, "score.weight", base_dir=base_dir)
    _no_output(tmp_path)


def test_zstd_frame_claiming_more_than_it_can_hold_is_refused():
    from modelcodecs._bytecoding import zstd_decompress

    frame = bytearray(zstandard.ZstdCompressor(write_content_size=True).compress(bytes(4 << 20)))
    descriptor = frame[4]
    assert descriptor >> 6 == 2  # a 4-byte content size field, after the window and dictionary fields
    at = 5 + (0 if descriptor & 0x20 else 1) + (0, 1, 2, 4)[descriptor & 3]
    frame[at:at + 4] = struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(CorruptArtifactError, match="cannot hold 4,294,967,295 bytes"):
        zstd_decompress(bytes(frame), 0xFFFFFFFF, "blob")
