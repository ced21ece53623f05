"""compress_model / decompress_model / verify_artifact / inspect_artifact / decode_tensor on tiny folders."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from common import (assert_same_tree, base_tensors, finetune, make_pair, sha256_file, tensor_bytes, tree_hashes,
                    write_bin)

import modelcodecs
from modelcodecs.abc import EncodedChunk, Param, TensorSpec
from modelcodecs.errors import CancelledError, ConfigError
from modelcodecs.registry import codec_registry, register_codec

torch = pytest.importorskip("torch")

LOSSLESS = [{"id": "zstd"}, {"id": "xor-zstd", "chunk_bytes": 4096}, {"id": "fmdelta"}]


def _round_trip(tmp_path, base_dir, ft_dir, codec, threads=1):
    out = tmp_path / f"a-{codec['id']}.dvz"
    summary = modelcodecs.compress_model(ft_dir, out, codec=codec, base_dir=base_dir, threads=threads)
    restored = tmp_path / f"restored-{codec['id']}"
    result = modelcodecs.decompress_model(out, restored, base_dir=base_dir, threads=threads)
    assert_same_tree(ft_dir, restored)
    return out, summary, result


@pytest.mark.parametrize("codec", LOSSLESS, ids=lambda c: c["id"])
@pytest.mark.parametrize("layout, shards", [("safetensors", 1), ("safetensors", 3), ("bin", 1), ("bin", 2)])
def test_lossless_round_trip_is_byte_identical(tmp_path, codec, layout, shards):
    base_dir, ft_dir = make_pair(tmp_path, layout=layout, shards=shards)
    out, summary, result = _round_trip(tmp_path, base_dir, ft_dir, codec)
    s = summary.as_dict()
    json.dumps(s)
    total = sum((p.stat().st_size for p in ft_dir.rglob("*") if p.is_file()))
    assert s["original_bytes"] == total
    assert s["compressed_bytes"] == out.stat().st_size
    assert s["ratio"] == pytest.approx(total / out.stat().st_size, rel=1e-3)
    assert s["codec"] == codec["id"] and s["codec_config"]["id"] == codec["id"]
    assert s["files"] == len(tree_hashes(ft_dir))
    assert s["deduplicated_tensors"] >= 1  # lm_head is a copy of embed
    assert s["peak_rss_bytes"] > 0 and s["seconds"] >= 0
    r = result.as_dict()
    assert r["verified"] and r["lossless"] and r["bytes_written"] == total and r["files"] == s["files"]
    report = modelcodecs.verify_artifact(out, base_dir=base_dir, reference_dir=ft_dir)
    assert report.ok, report.message
    assert {f["name"]: f["sha256"] for f in report.files} == tree_hashes(ft_dir)


def test_base_used_only_for_matching_tensors(artifact):
    path, base_dir, ft_dir = artifact
    info = modelcodecs.inspect_artifact(path)
    by_name = {t["name"]: t for t in info["tensor_list"]}
    assert by_name["layers.0.mlp.up.weight"]["base"] == "layers.0.mlp.up.weight"
    assert by_name["score.weight"]["base"] is None  # not in the base
    assert by_name["layers.0.norm.running_mean"]["base"] is None  # other shape in the base
    assert by_name["lm_head.weight"]["coders"] == ["duplicate"]
    assert info["codec"] == "xor-zstd" and info["format_version"] == 2
    assert info["tensors"] == len(info["tensor_list"])
    assert info["compressed_bytes"] == path.stat().st_size
    assert info["ratio"] == pytest.approx(info["original_bytes"] / info["compressed_bytes"], rel=1e-3)
    assert {f["name"] for f in info["files"]} == set(tree_hashes(ft_dir))
    for t in info["tensor_list"]:
        assert t["original_bytes"] == TensorSpec(t["name"], t["dtype"], tuple(t["shape"])).nbytes
    json.dumps(info)


def test_decode_one_tensor(artifact):
    path, base_dir, ft_dir = artifact
    tuned = finetune(base_tensors(0), 1)
    for name in ("layers.0.mlp.up.weight", "lm_head.weight", "mask", "empty", "step", "layers.0.attn.k.scale"):
        spec, data = modelcodecs.decode_tensor(path, name, base_dir=base_dir)
        assert spec.shape == tuple(tuned[name].shape)
        assert bytes(data) == tensor_bytes(tuned[name])
    with pytest.raises(ConfigError, match="no tensor"):
        modelcodecs.decode_tensor(path, "nope", base_dir=base_dir)


def test_progress_and_threads(tmp_path, pair):
    base_dir, ft_dir = pair
    events = []
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec={"id": "zstd", "chunk_bytes": 4096},
                               threads=2, progress=lambda d, t, s: events.append((d, t, s)))
    total = sum(p.stat().st_size for p in ft_dir.rglob("*") if p.is_file())
    assert events and all(t == total for _, t, _ in events)
    assert [d for d, _, _ in events] == sorted(d for d, _, _ in events)
    assert events[-1][0] == total
    events.clear()
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out", threads=2,
                                 progress=lambda d, t, s: events.append((d, t, s)))
    assert events[-1][:2] == (total, total)
    assert_same_tree(ft_dir, tmp_path / "out")


def test_cancel_leaves_nothing(tmp_path, pair):
    base_dir, ft_dir = pair
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(CancelledError):
        modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="xor-zstd", base_dir=base_dir, cancel=cancel)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("a.dvz")]
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="xor-zstd", base_dir=base_dir)
    calls["n"] = 0
    with pytest.raises(CancelledError):
        modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out", base_dir=base_dir, cancel=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dvz", "base", "ft"]


def test_decompress_into_empty_existing_folder(tmp_path, pair):
    base_dir, ft_dir = pair
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="zstd")
    (tmp_path / "out").mkdir()
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out")
    assert_same_tree(ft_dir, tmp_path / "out")


def test_needs_base_without_base_is_a_config_error(tmp_path, pair):
    _, ft_dir = pair
    with pytest.raises(ConfigError, match="needs the base"):
        modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="xor-zstd")
    assert not list(tmp_path.glob("a.dvz*"))


def test_no_base_codec_ignores_missing_base_at_decode(tmp_path, pair):
    base_dir, ft_dir = pair
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="zstd", base_dir=base_dir)
    info = modelcodecs.inspect_artifact(tmp_path / "a.dvz")
    assert all(t["base"] is None for t in info["tensor_list"])
    assert modelcodecs.verify_artifact(tmp_path / "a.dvz").ok


def test_codec_given_as_instance_or_id(tmp_path, pair):
    _, ft_dir = pair
    s1 = modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec=modelcodecs.get_codec({"id": "zstd",
                                                                                             "level": 5}))
    s2 = modelcodecs.compress_model(ft_dir, tmp_path / "b.dvz", codec="zstd")
    assert s1.codec_config["level"] == 5 and s2.codec_config["level"] == 3
    with pytest.raises(modelcodecs.UnknownCodecError):
        modelcodecs.compress_model(ft_dir, tmp_path / "c.dvz", codec="nope")


def test_identical_tensors_stored_once(tmp_path):
    same = torch.randn(64, 64)
    tensors = {"a": same, "b": same.clone(), "c": same.clone().reshape(4096), "d": same.clone().half()}
    write_bin(tmp_path / "ft", tensors, extras=False)  # .bin: four storages, same bytes for a, b, c
    s = modelcodecs.compress_model(tmp_path / "ft", tmp_path / "a.dvz", codec="zstd")
    assert s.deduplicated_tensors == 1  # b; c has another shape, d another dtype
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "pytorch_model.bin") == sha256_file(tmp_path / "ft" / "pytorch_model.bin")


class _HalfCodec(modelcodecs.Codec):
    """A lossy test codec: floats 32 stored as float16 (exercises the pipeline's lossy path)."""

    codec_id = "test-half"
    lossless = False
    params = (Param("unused", int, 0, "nothing"),)

    def encode_tensor(self, spec, data, base, *, threads=1, cancel=None) -> Iterator[EncodedChunk]:
        if spec.dtype == "F32":
            yield EncodedChunk("half", np.frombuffer(data, np.float32).astype(np.float16).tobytes(), {})
        else:
            yield EncodedChunk("raw", bytes(data), {})

    def decode_tensor(self, spec, chunks: Sequence[EncodedChunk], base, out, *, threads=1, cancel=None) -> None:
        (chunk,) = chunks
        if chunk.coder == "half":
            out[:] = np.frombuffer(chunk.payload, np.float16).astype(np.float32).tobytes()
        else:
            out[:] = chunk.payload


@pytest.fixture
def half_codec():
    register_codec(_HalfCodec)
    yield _HalfCodec
    codec_registry.pop("test-half", None)


def test_lossy_codec_path(tmp_path, half_codec):
    from safetensors.torch import load_file

    base_dir, ft_dir = make_pair(tmp_path)
    modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec="test-half")
    summary = modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out")
    assert summary.lossless is False and summary.verified is False
    original, restored = tree_hashes(ft_dir), tree_hashes(tmp_path / "out")
    assert original.keys() == restored.keys()
    for name in original:
        if not name.endswith(".safetensors"):
            assert original[name] == restored[name]
    a = load_file(ft_dir / "model.safetensors")
    b = load_file(tmp_path / "out" / "model.safetensors")
    assert a.keys() == b.keys()
    torch.testing.assert_close(a["score.weight"], b["score.weight"], rtol=1e-3, atol=1e-4)
    assert not torch.equal(a["score.weight"], b["score.weight"])
    report = modelcodecs.verify_artifact(tmp_path / "a.dvz")
    assert report.ok and "lossy" in report.message


@pytest.mark.parametrize("codec", ["zstd", "fmdelta"])
def test_progress_advances_chunk_by_chunk(tmp_path, codec):
    from common import write_safetensors

    options = {"chunk_bytes": 16384} if codec == "zstd" else {"chunk_elements": 4096}
    big = torch.randn(128, 128)
    write_safetensors(tmp_path / "base", {"big": big}, extras=False)
    write_safetensors(tmp_path / "ft", {"big": big + 1e-3}, extras=False)  # 64 KiB: four chunks
    events = []
    modelcodecs.compress_model(tmp_path / "ft", tmp_path / "a.dvz", codec={"id": codec, **options},
                               base_dir=tmp_path / "base", progress=lambda d, t, s: events.append((d, s)))
    steps = [b[0] - a[0] for a, b in zip(events, events[1:]) if "big" in b[1]]
    assert [x for x in steps if x] == [16384] * 4
