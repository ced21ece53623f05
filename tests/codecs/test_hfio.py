"""Reading Hugging Face folders: layouts, strict safetensors headers, weights-only .bin, unsafe paths, info."""

from __future__ import annotations

import json
import os
import pickle
import struct

import numpy as np
import pytest
from common import base_tensors, sha256_file, tensor_bytes, write_bin, write_safetensors

from modelcodecs import compare_models, read_model_info
from modelcodecs.errors import ModelFormatError, UnsafePathError, UnsupportedDtypeError
from modelcodecs.hfio import ModelFolder, TensorRef

torch = pytest.importorskip("torch")


def _expected_bytes(t) -> bytes:
    return tensor_bytes(t)


def _check_covers(folder: ModelFolder) -> None:
    """Segments cover every file exactly and in order."""
    for plan in folder.files:
        cursor = 0
        for seg in plan.segments:
            start, end = (seg.offset, seg.offset + seg.spec.nbytes) if isinstance(seg, TensorRef) else seg
            assert start == cursor
            cursor = end
        assert cursor == plan.size


@pytest.mark.parametrize("shards", [1, 3])
def test_safetensors_tensors_read_exactly(tmp_path, shards):
    tensors = base_tensors()
    write_safetensors(tmp_path / "m", tensors, shards=shards)
    with ModelFolder(tmp_path / "m") as folder:
        _check_covers(folder)
        assert set(folder.tensors) == set(tensors)
        for name, t in tensors.items():
            ref = folder.tensors[name]
            assert ref.spec.shape == tuple(t.shape)
            assert bytes(folder.read_tensor(ref)) == _expected_bytes(t)
        assert folder.layout == ("safetensors" if shards == 1 else "sharded-safetensors")
        raw = {p.name for p in folder.files if p.kind == "raw"}
        assert {"config.json", "tokenizer/tokenizer.json", "README.md", "empty.txt"} <= raw


@pytest.mark.parametrize("shards", [1, 2])
def test_bin_storages_mapped_to_tensors(tmp_path, shards):
    tensors = base_tensors()
    write_bin(tmp_path / "m", tensors, shards=shards)
    with ModelFolder(tmp_path / "m") as folder:
        _check_covers(folder)
        assert folder.layout == "pytorch-bin"
        # every tensor that owns its storage is found by name with its dtype (empty ones have no storage bytes)
        for name, t in tensors.items():
            if t.numel() == 0:
                continue
            ref = folder.tensors[name]
            assert ref.spec.dtype == {"torch.bfloat16": "BF16", "torch.float16": "F16", "torch.float32": "F32",
                                      "torch.float64": "F64", "torch.int64": "I64", "torch.int32": "I32",
                                      "torch.bool": "BOOL", "torch.int16": "I16", "torch.uint8": "U8",
                                      "torch.float8_e4m3fn": "F8_E4M3"}[str(t.dtype)]
            assert bytes(folder.read_tensor(ref)) == _expected_bytes(t)


def test_bin_views_become_plain_bytes(tmp_path):
    big = torch.arange(20, dtype=torch.float32)
    write_bin(tmp_path / "m", {"view": big[5:10], "other": torch.ones(3)}, extras=False)
    with ModelFolder(tmp_path / "m") as folder:
        assert "other" in folder.tensors and "view" not in folder.tensors
        unnamed = [r for r in folder.iter_tensors() if not r.named]
        assert len(unnamed) == 1 and unnamed[0].spec.dtype == "U8" and unnamed[0].spec.nbytes == 80


def test_metadata_and_padding_kept(tmp_path):
    """A hand-written safetensors file with metadata, a gap between tensors and trailing bytes."""
    header = {"__metadata__": {"format": "pt"},
              "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "I8", "shape": [3], "data_offsets": [16, 19]}}
    blob = json.dumps(header).encode()
    data = struct.pack("<Q", len(blob)) + blob + bytes(range(8)) + b"GAPGAPGA" + b"xyz" + b"tail"
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(data)
    with ModelFolder(tmp_path / "m") as folder:
        _check_covers(folder)
        assert bytes(folder.read_tensor(folder.tensors["b"])) == b"xyz"
        raws = [seg for seg in folder.files[0].segments if not isinstance(seg, TensorRef)]
        assert [data[a:b] for a, b in raws][1:] == [b"GAPGAPGA", b"tail"]


def _write_header(path, header: dict, data: bytes = b"") -> None:
    blob = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


@pytest.mark.parametrize("header, data, error, message", [
    ({"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0", UnsupportedDtypeError, "'w'.*F4"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, bytes(8), ModelFormatError, "outside"),
    ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), ModelFormatError, "needs 12"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), ModelFormatError, "shape"),
    ({"w": {"dtype": "F32", "shape": [2]}}, bytes(8), ModelFormatError, "malformed"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), ModelFormatError, "overlaps"),
    ([1, 2], b"", ModelFormatError, "not a JSON object"),
])
def test_bad_safetensors_headers(tmp_path, header, data, error, message):
    _write_header(tmp_path / "m" / "model.safetensors", header, data)
    with pytest.raises(error, match=message):
        ModelFolder(tmp_path / "m")


def test_pickle_where_safetensors_expected(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(ModelFormatError, match="pickle"):
        ModelFolder(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(ModelFormatError, match="JSON"):
        ModelFolder(tmp_path / "m")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/modelcodecs-pwned",))


def test_bin_is_loaded_weights_only(tmp_path):
    """A hostile pickle inside pytorch_model.bin is refused, never executed."""
    (tmp_path / "m").mkdir()
    torch.save({"w": torch.ones(2), "evil": _Evil()}, tmp_path / "m" / "pytorch_model.bin")
    marker = "/tmp/modelcodecs-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    with pytest.raises(ModelFormatError, match="weights-only"):
        ModelFolder(tmp_path / "m")
    assert not os.path.exists(marker)
    # a legacy (non-zip) pickle under the weights name is refused without unpickling
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(ModelFormatError, match="refusing"):
        ModelFolder(tmp_path / "m")


def test_other_pickles_are_kept_as_bytes(tmp_path):
    write_safetensors(tmp_path / "m", {"w": torch.ones(2)}, extras=False)
    torch.save({"evil": _Evil()}, tmp_path / "m" / "training_args.bin")
    with ModelFolder(tmp_path / "m") as folder:
        kinds = {p.name: p.kind for p in folder.files}
    assert kinds == {"model.safetensors": "safetensors", "training_args.bin": "raw"}


def test_missing_shard_is_refused(tmp_path):
    write_safetensors(tmp_path / "m", base_tensors(), shards=2, extras=False)
    shard = sorted(p for p in (tmp_path / "m").iterdir() if p.suffix == ".safetensors")[0]
    shard.unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        ModelFolder(tmp_path / "m")


def test_symlinks(tmp_path):
    write_safetensors(tmp_path / "m", {"w": torch.ones(2)}, extras=False)
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "m" / "inside.txt").write_text("inside")
    os.symlink("inside.txt", tmp_path / "m" / "alias.txt")
    with ModelFolder(tmp_path / "m") as folder:
        assert {p.name for p in folder.files} >= {"alias.txt", "inside.txt"}
    os.symlink(tmp_path / "secret.txt", tmp_path / "m" / "escape.txt")
    with pytest.raises(UnsafePathError, match="escape.txt"):
        ModelFolder(tmp_path / "m")
    os.unlink(tmp_path / "m" / "escape.txt")
    os.symlink("../secret.txt", tmp_path / "m" / "dotdot.txt")
    with pytest.raises(UnsafePathError):
        ModelFolder(tmp_path / "m")


def test_fifo_is_refused(tmp_path):
    write_safetensors(tmp_path / "m", {"w": torch.ones(2)}, extras=False)
    os.mkfifo(tmp_path / "m" / "pipe")
    with pytest.raises(ModelFormatError, match="regular file"):
        ModelFolder(tmp_path / "m")


def test_not_a_model(tmp_path):
    with pytest.raises(ModelFormatError, match="not a folder"):
        ModelFolder(tmp_path / "nope")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(ModelFormatError, match="no model weights"):
        ModelFolder(tmp_path / "m")


def test_read_model_info(tmp_path):
    tensors = base_tensors()
    write_safetensors(tmp_path / "m", tensors, shards=2)
    info = read_model_info(tmp_path / "m")
    assert info["layout"] == "sharded-safetensors"
    assert info["architecture"] == "TinyForCausalLM" and info["model_type"] == "tiny"
    assert info["tensor_count"] == len(tensors)
    assert info["parameter_count"] == sum(t.numel() for t in tensors.values())
    assert info["dtypes"]["BF16"] == 2 and info["dtypes"]["BOOL"] == 1 and info["dtypes"]["F8_E4M3"] == 1
    files = {f["name"]: f for f in info["files"]}
    assert info["total_bytes"] == sum(f["size"] for f in files.values())
    for name, entry in files.items():
        assert entry["sha256"] == sha256_file(tmp_path / "m" / name)
    json.dumps(info)


def test_compare_models(tmp_path):
    base = {"a": torch.ones(2), "b": torch.ones(3), "c": torch.ones(4), "d": torch.ones(2)}
    tuned = {"a": torch.ones(2), "b": torch.ones(4), "c": torch.ones(4, dtype=torch.float16), "e": torch.ones(1)}
    write_safetensors(tmp_path / "base", base, extras=False)
    write_safetensors(tmp_path / "ft", tuned, extras=False)
    cmp = compare_models(tmp_path / "base", tmp_path / "ft")
    assert cmp["shared"] == 3
    assert cmp["missing_in_base"] == ["e"] and cmp["missing_in_finetuned"] == ["d"]
    assert cmp["shape_mismatch"] == [{"name": "b", "base": [3], "finetuned": [4]}]
    assert [d["name"] for d in cmp["dtype_mismatch"]] == ["c"]
    assert cmp["compatible"] is False  # only 1 of 4 tensors can use the base
    same = compare_models(tmp_path / "base", tmp_path / "base")
    assert same["compatible"] and same["shared"] == 4 and not same["missing_in_base"]
    assert np.isclose(same["matching_bytes"], 4 * (2 + 3 + 4 + 2))
