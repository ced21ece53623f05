"""The content-addressed tensor store (modelcodecs.tensorstore): byte-exact round trips of every dtype, tensors
stored once, and damage reported with the tensor and file it hits."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from common import assert_same_tree, tree_hashes

from modelcodecs import CorruptArtifactError
from modelcodecs.abc import DTYPE_SIZES
from modelcodecs.tensorstore import (iter_object_files, manifest_keys, object_path, remove_objects, restore_model,
                                     store_model, tensor_key)


def _values(dtype: str, n: int, seed: int) -> bytes:
    """Realistic bytes of ``n`` elements of ``dtype`` (floats near zero, small integers, bools)."""
    rng = np.random.default_rng(seed)
    if dtype in ("F32", "F64", "F16"):
        return rng.normal(0, 0.02, n).astype({"F32": "<f4", "F64": "<f8", "F16": "<f2"}[dtype]).tobytes()
    if dtype == "BF16":
        return (rng.normal(0, 0.02, n).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    if dtype == "BOOL":
        return rng.integers(0, 2, n).astype("u1").tobytes()
    if dtype.startswith("F8"):
        return rng.integers(0, 256, n).astype("u1").tobytes()
    item = DTYPE_SIZES[dtype]
    kind = "u" if dtype.startswith("U") else "i"
    return rng.integers(-50 if kind == "i" else 0, 50, n).astype(f"<{kind}{item}").tobytes()


def write_safetensors_raw(path, tensors: list[tuple[str, str, tuple, bytes]], *, metadata=None, gap: bytes = b"",
                          header_pad: int = 0):
    """A safetensors file laid out by hand: tensors in the given order (not sorted by name), ``gap`` bytes between
    them and header padding of ``header_pad`` spaces, so a round trip must keep layout, not just values."""
    header, offset, body = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        body += data + gap
        offset += len(data) + len(gap)
    text = json.dumps(header).encode() + b" " * header_pad
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)
    return path


@pytest.fixture
def every_dtype_model(tmp_path):
    folder = tmp_path / "model"
    tensors = [(f"layer.{i}.{dtype.lower()}", dtype, (3, 37), _values(dtype, 3 * 37, i))
               for i, dtype in enumerate(sorted(DTYPE_SIZES, reverse=True))]
    tensors.append(("empty", "F32", (0, 4), b""))
    write_safetensors_raw(folder / "model.safetensors", tensors, metadata={"format": "pt", "note": "z"},
                          gap=b"\x07\x00pad", header_pad=13)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"vocab": {"a": 1}}' * 50)
    return folder


def test_round_trip_every_dtype_byte_exact(every_dtype_model, tmp_path):
    root = tmp_path / "store"
    summary = store_model(every_dtype_model, root)
    hashes = restore_model(summary.manifest, root, tmp_path / "out")
    assert_same_tree(every_dtype_model, tmp_path / "out")
    assert hashes == tree_hashes(every_dtype_model)
    stored = [seg for f in summary.manifest["files"] for seg in f["segments"] if "tensor" in seg]
    assert {seg["dtype"] for seg in stored} == set(DTYPE_SIZES)
    assert summary.logical_bytes == sum(p.stat().st_size for p in every_dtype_model.iterdir())


def test_tied_tensors_and_a_second_model_are_stored_once(tmp_path):
    shared = _values("BF16", 4096, 1)
    first = write_safetensors_raw(tmp_path / "a" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("lm_head", "BF16", (64, 64), shared),
        ("own", "F32", (100,), _values("F32", 100, 2))]).parent
    second = write_safetensors_raw(tmp_path / "b" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("new", "F32", (100,), _values("F32", 100, 3))]).parent
    root = tmp_path / "store"

    one = store_model(first, root)
    assert one.deduplicated_bytes == len(shared)  # the tied head
    two = store_model(second, root)
    assert two.deduplicated_bytes == len(shared)
    assert tensor_key("BF16", (64, 64), shared) not in two.new_keys
    assert set(one.new_keys).isdisjoint(two.new_keys)
    # same bytes under another shape are another tensor
    assert tensor_key("BF16", (4096,), shared) != tensor_key("BF16", (64, 64), shared)
    assert {key for key, _ in iter_object_files(root)} == set(manifest_keys(one.manifest)) | set(
        manifest_keys(two.manifest))
    for summary, folder in ((one, first), (two, second)):
        out = tmp_path / f"out-{folder.name}"
        restore_model(summary.manifest, root, out)
        assert_same_tree(folder, out)


def test_threads_store_the_same_objects_and_manifest(every_dtype_model, tmp_path):
    one = store_model(every_dtype_model, tmp_path / "one", threads=1)
    two = store_model(every_dtype_model, tmp_path / "two", threads=3)
    assert two.manifest == one.manifest and two.as_dict() == one.as_dict()
    assert {k: p.read_bytes() for k, p in iter_object_files(tmp_path / "two")} == {
        k: p.read_bytes() for k, p in iter_object_files(tmp_path / "one")}


def test_store_again_writes_nothing_and_rewrite_restores_a_lost_object(every_dtype_model, tmp_path):
    root = tmp_path / "store"
    first = store_model(every_dtype_model, root)
    again = store_model(every_dtype_model, root)
    assert again.new_keys == [] and again.written_bytes == 0
    assert again.manifest == first.manifest
    lost = manifest_keys(first.manifest)[2]
    remove_objects(root, [lost])
    fixed = store_model(every_dtype_model, root, rewrite=[lost])
    assert fixed.new_keys == [lost]
    restore_model(fixed.manifest, root, tmp_path / "out")
    assert_same_tree(every_dtype_model, tmp_path / "out")


def _tensor_segment(manifest, name):
    for entry in manifest["files"]:
        for segment in entry["segments"]:
            if segment.get("tensor") == name:
                return entry["name"], segment
    raise KeyError(name)


def test_missing_object_names_tensor_and_file(every_dtype_model, tmp_path):
    root = tmp_path / "store"
    manifest = store_model(every_dtype_model, root).manifest
    _, segment = _tensor_segment(manifest, "layer.4.i8")
    object_path(root, segment["key"]).unlink()
    with pytest.raises(CorruptArtifactError, match=r"'layer\.4\.i8' of model\.safetensors.*missing"):
        restore_model(manifest, root, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()  # no partial file under the real name


@pytest.mark.parametrize("damage", ["flip_body", "truncate", "swap"])
def test_corrupt_object_names_tensor_and_file(every_dtype_model, tmp_path, damage):
    root = tmp_path / "store"
    manifest = store_model(every_dtype_model, root).manifest
    _, segment = _tensor_segment(manifest, "layer.0.u8")
    path = object_path(root, segment["key"])
    data = bytearray(path.read_bytes())
    if damage == "flip_body":
        data[-3] ^= 0x40
        path.write_bytes(data)
    elif damage == "truncate":
        path.write_bytes(data[:-5])
    else:  # another valid object put under this key
        _, other = _tensor_segment(manifest, "layer.1.u64")
        path.write_bytes(object_path(root, other["key"]).read_bytes())
    with pytest.raises(CorruptArtifactError, match=r"'layer\.0\.u8' of model\.safetensors.*corrupt"):
        restore_model(manifest, root, tmp_path / "out")


def test_re_sealed_object_is_caught_by_its_key(every_dtype_model, tmp_path):
    """An object re-written with consistent crcs but other values still fails: the key is the content hash."""
    from modelcodecs.tensorstore import write_object
    from modelcodecs.abc import TensorSpec

    root = tmp_path / "store"
    manifest = store_model(every_dtype_model, root).manifest
    _, segment = _tensor_segment(manifest, "layer.5.i64")
    spec = TensorSpec("x", segment["dtype"], tuple(segment["shape"]))
    write_object(root, segment["key"], spec, bytes(spec.nbytes))
    with pytest.raises(CorruptArtifactError, match=r"'layer\.5\.i64'.*hash mismatch"):
        restore_model(manifest, root, tmp_path / "out")


def test_manifest_cannot_write_outside_the_folder(every_dtype_model, tmp_path):
    root = tmp_path / "store"
    manifest = store_model(every_dtype_model, root).manifest
    manifest["files"][0]["name"] = "../escaped.json"
    with pytest.raises(CorruptArtifactError, match="outside the model folder"):
        restore_model(manifest, root, tmp_path / "out")
    assert not (tmp_path / "escaped.json").exists()


def test_large_byte_ranges_are_split_into_bounded_objects(tmp_path, monkeypatch):
    import modelcodecs.tensorstore as tensorstore

    monkeypatch.setattr(tensorstore, "RAW_PIECE_BYTES", 1000)
    folder = tmp_path / "m"
    write_safetensors_raw(folder / "model.safetensors", [("w", "F32", (10,), _values("F32", 10, 0))])
    (folder / "vocab.txt").write_bytes(np.random.default_rng(0).integers(0, 255, 4500).astype("u1").tobytes())
    manifest = store_model(folder, tmp_path / "store").manifest
    vocab = next(f for f in manifest["files"] if f["name"] == "vocab.txt")
    assert [seg["shape"] for seg in vocab["segments"]] == [[1000]] * 4 + [[500]]
    restore_model(manifest, tmp_path / "store", tmp_path / "out")
    assert_same_tree(folder, tmp_path / "out")


def test_progress_counts_logical_bytes(every_dtype_model, tmp_path):
    seen = []
    summary = store_model(every_dtype_model, tmp_path / "store", progress=lambda d, t, s: seen.append((d, t)))
    assert seen[-1] == (summary.logical_bytes, summary.logical_bytes)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_no_temporary_files_left_and_objects_only_under_their_key(every_dtype_model, tmp_path):
    root = tmp_path / "store"
    store_model(every_dtype_model, root)
    leftovers = [p for p in (root / "objects").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_command_line_put_restore_and_gc(tmp_path, capsys):
    from modelcodecs.cli import main

    shared = _values("BF16", 4096, 1)
    first = write_safetensors_raw(tmp_path / "a" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("own", "F32", (100,), _values("F32", 100, 2))]).parent
    second = write_safetensors_raw(tmp_path / "b" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("new", "F32", (100,), _values("F32", 100, 3))]).parent
    root = tmp_path / "store"
    assert main(["store", "put", str(first), "--root", str(root), "-o", str(tmp_path / "a.json")]) == 0
    assert main(["store", "put", str(second), "--root", str(root), "-o", str(tmp_path / "b.json"), "--json"]) == 0
    put = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert put["deduplicated_bytes"] == len(shared)
    assert main(["store", "gc", "--root", str(root), str(tmp_path / "b.json")]) == 0
    assert main(["store", "restore", str(tmp_path / "b.json"), "--root", str(root), "-o", str(tmp_path / "out")]) == 0
    assert_same_tree(second, tmp_path / "out")
    # the first model's own tensor (and header) went with gc; the shared one stayed for the second
    assert main(["store", "restore", str(tmp_path / "a.json"), "--root", str(root), "-o", str(tmp_path / "x")]) != 0
    assert "missing" in capsys.readouterr().err


def test_bench_case_counts_what_the_second_model_adds(tmp_path):
    from modelcodecs.bench_tensorstore import format_case, run_case

    shared = _values("BF16", 4096, 1)
    first = write_safetensors_raw(tmp_path / "a" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("own", "F32", (100,), _values("F32", 100, 2))]).parent
    second = write_safetensors_raw(tmp_path / "b" / "model.safetensors", [
        ("embed", "BF16", (64, 64), shared), ("own", "F32", (100,), _values("F32", 100, 3))]).parent
    case = run_case("two models", first, second, tmp_path / "work", 1, log=lambda _: None)
    one, two = case["rows"]
    # the tensor and the safetensors header (same names, shapes, offsets) are shared; "own" differs
    assert one["deduplicated_bytes"] == 0 and len(shared) < two["deduplicated_bytes"] < two["logical_bytes"]
    assert case["bytes_on_disk"] == one["written_bytes"] + two["written_bytes"] < case["alone_bytes"]
    assert case["logical_bytes"] == one["logical_bytes"] + two["logical_bytes"]
    assert "two models" in format_case(case)


@pytest.mark.parametrize("threads", [1, 2])
def test_cancel_stops_the_store_and_leaves_no_partial_object(every_dtype_model, tmp_path, threads):
    from modelcodecs import CancelledError

    calls = []
    with pytest.raises(CancelledError):
        store_model(every_dtype_model, tmp_path / "store", threads=threads,
                    cancel=lambda: calls.append(1) or len(calls) > 3)
    assert list((tmp_path / "store").rglob(".*")) == []  # no temporary object left behind
