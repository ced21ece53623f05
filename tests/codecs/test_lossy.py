"""The lossy weight codecs ``hyper`` and ``rtn``: nearest codeword against brute force, error bounds, round trips
through the pipeline (the lossless part byte-identical), delta mode, the raw fallback and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from common import check_config, check_repr, make_pair

import modelcodecs
from modelcodecs import HyperCodec, RTNCodec, get_codec
from modelcodecs import _lossy_kernels
from modelcodecs._lossy import to_float32
from modelcodecs.abc import EncodedChunk, TensorSpec
from modelcodecs.errors import ConfigError, CorruptArtifactError, WrongBaseError
from modelcodecs.hyper import (_torch_lattice_nearest, _torch_pair_indices, _torch_quantise, encode_device,
                               index_bits, lattice_points, nearest_lattice, winding_points)

rng = np.random.default_rng(7)
codecs = [HyperCodec(), HyperCodec(l=0.05, n=63, M=2, auto_l=True, on_delta=True, max_error=0.1,
                                   exclude="*.bias"), HyperCodec(trajectory="winding", n=100, M=0),
          RTNCodec(), RTNCodec(bits=3, granularity="group", group_size=16, include="layers.*")]


def _spec(shape, dtype="F32", name="w"):
    return TensorSpec(name, dtype, tuple(shape))


def nearest_brute(ux: np.ndarray, uy: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``points`` (first on ties) by exhaustive search: the reference for the closed form."""
    dx = ux[:, None] - points[None, :, 0]
    dy = uy[:, None] - points[None, :, 1]
    return np.argmin(dx * dx + dy * dy, axis=1)


def reference_pack(values: np.ndarray, width: int) -> bytes:
    """The index layout spelled out bit by bit: a byte plane per whole byte of the width (low byte first), then
    the width % 8 high bits of every value as one LSB-first bit stream."""
    whole, rest = divmod(width, 8)
    planes = b"".join(bytes((int(v) >> (8 * p)) & 0xFF for v in values) for p in range(whole))
    bits = [(int(v) >> (8 * whole + i)) & 1 for v in values for i in range(rest)]
    bits += [0] * (-len(bits) % 8)
    return planes + bytes(sum(bits[j + i] << i for i in range(8)) for j in range(0, len(bits), 8))


def _roundtrip(codec, spec, data: bytes, base: bytes | None = None) -> tuple[bytes, list[EncodedChunk]]:
    chunks = list(codec.encode_tensor(spec, memoryview(data), None if base is None else memoryview(base)))
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, None if base is None else memoryview(base), memoryview(out))
    return bytes(out), chunks


@pytest.mark.parametrize("codec", codecs, ids=repr)
def test_config_and_repr(codec):
    check_config(codec)
    check_repr(codec)
    assert codec.needs_base == codec.on_delta and not codec.lossless


LATTICE_SIZES = [4, 5, 7, 15, 16, 30, 63, 99, 225, 1600]


def local_points(l: float) -> np.ndarray:
    """Random points of the square [0, l]^2, its corners, centre and edge midpoints first."""
    u = rng.random((4000, 2)) * l
    u[:8] = [[0, 0], [l, l], [0, l], [l, 0], [l / 2, l / 2], [l, l / 2], [l / 2, l], [l * 0.999, 0.001]]
    return u


@pytest.mark.parametrize("n", LATTICE_SIZES)
def test_closed_form_nearest_codeword_equals_brute_force(n):
    l = 0.3
    points = lattice_points(l, n)
    u = local_points(l)
    fast = nearest_lattice(u[:, 0], u[:, 1], l, n)
    slow = nearest_brute(u[:, 0], u[:, 1], points)
    assert fast.min() >= 0 and fast.max() <= n

    def dist(k):
        return np.hypot(u[:, 0] - points[k, 0], u[:, 1] - points[k, 1])

    np.testing.assert_allclose(dist(fast), dist(slow), rtol=0, atol=1e-12)
    assert (fast == slow).mean() > 0.99  # equal up to exact ties between codewords


def test_lattice_is_the_released_codebook():
    # q_k = ((k l / T^2) mod l, (k l / T) mod l): n = 15 (T = 4) fills a full 4x4 sheared grid
    pts = lattice_points(1.0, 15)
    assert len(pts) == 16 and len({tuple(np.round(p, 12)) for p in pts}) == 16
    np.testing.assert_allclose(pts[5], [5 / 16, (5 / 4) % 1])
    assert index_bits(15, 3) == 6 and index_bits(1600, 3) == 13 and index_bits(225, 3) == 10


@pytest.mark.parametrize("width", [1, 3, 7, 8, 10, 13, 16, 21, 32])
def test_bit_packing_keeps_the_wire_layout_and_round_trips(width):
    values = rng.integers(0, 1 << width, 1001, dtype=np.uint64).astype(np.uint32)
    packed = np.empty(_lossy_kernels.packed_bytes(1001, width), dtype=np.uint8)
    _lossy_kernels.pack(values, width, packed)
    assert packed.size == math.ceil(1001 * width / 8)
    assert packed.tobytes() == reference_pack(values, width)
    out = np.empty(1001, dtype=np.uint32)
    _lossy_kernels.unpack(packed, width, out)
    np.testing.assert_array_equal(out, values)
    with pytest.raises(ValueError):
        _lossy_kernels.unpack(packed[:-1], width, out)


def test_hyper_error_is_within_the_lattice_covering_radius_inside_the_square():
    l, n = 0.2, 225
    w = (rng.random((128, 50)) * 0.18 - 0.09).astype(np.float32)  # every pair inside the square around c
    restored, chunks = _roundtrip(HyperCodec(l=l, n=n, M=3, chunk_elements=4096), _spec(w.shape), w.tobytes())
    got = np.frombuffer(restored, np.float32).reshape(w.shape)
    pairs = np.hypot(*(got - w).reshape(-1, 2).T)
    assert pairs.max() <= l / 15 * math.sqrt(2) * 1.0001  # a lattice cell's diagonal: s = l / T
    assert chunks[0].coder == "hyper" and chunks[0].meta["n"] == 4096
    assert len(chunks[0].payload) == math.ceil(2048 * 10 / 8)  # 10 bits per pair


def test_hyper_rings_bound_the_error_of_outliers_and_winding_works():
    w = (rng.standard_t(3, (40, 40)) * 0.02).astype(np.float32)
    for codec in (HyperCodec(l=0.02, n=225, M=4), HyperCodec(l=0.02, n=225, M=4, trajectory="winding"),
                  HyperCodec(n=1023, M=3, auto_l=True)):
        restored, chunks = _roundtrip(codec, _spec(w.shape), w.tobytes())
        got = np.frombuffer(restored, np.float32).reshape(w.shape)
        assert np.isfinite(got).all()
        rel = np.linalg.norm(got - w) / np.linalg.norm(w)
        assert rel < 0.2, (codec, rel)
        pairs = w.reshape(-1, 2).astype(np.float64)
        assert chunks[0].meta["R"] == pytest.approx(np.hypot(*(pairs - pairs.mean(axis=0)).T).max())


def test_rtn_8_bits_reconstructs_within_its_step_per_channel_and_per_group():
    w = (rng.standard_normal((33, 70)) * np.linspace(0.01, 1, 33)[:, None]).astype(np.float32)
    restored, chunks = _roundtrip(RTNCodec(bits=8), _spec(w.shape), w.tobytes())
    got = np.frombuffer(restored, np.float32).reshape(w.shape)
    step = (w.max(axis=1) - w.min(axis=1)) / 255
    assert (np.abs(got - w) <= step[:, None] / 2 * (1 + 1e-4) + 1e-9).all()
    assert (np.abs(got - w) > 0).any()
    # per group of 16 (70 is not a multiple: the last group of each 1-D run is partial)
    flat = w.reshape(-1)
    restored, chunks = _roundtrip(RTNCodec(bits=8, granularity="group", group_size=16), _spec(w.shape),
                                  w.tobytes())
    got = np.frombuffer(restored, np.float32)
    for g in range(0, flat.size, 16):
        part = flat[g:g + 16]
        assert np.abs(got[g:g + 16] - part).max() <= (part.max() - part.min()) / 255 / 2 * (1 + 1e-4) + 1e-9
    units = -(-flat.size // 16)
    assert sum(len(c.payload) for c in chunks) == 8 * units + flat.size  # steps + minimums + one byte each


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F64"])
def test_other_float_dtypes_keep_dtype_and_shape(dtype):
    w = (rng.standard_normal((16, 24)) * 0.05).astype(np.float64)
    data = {"F16": w.astype(np.float16).tobytes(), "F64": w.tobytes(),
            "BF16": (w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()}[dtype]
    for codec in (HyperCodec(n=1023, M=3, auto_l=True), RTNCodec(bits=6)):
        restored, _ = _roundtrip(codec, _spec(w.shape, dtype), data)
        assert len(restored) == len(data)
        got, ref = to_float32(restored, dtype), to_float32(data, dtype)
        assert np.abs(got - ref).max() < 0.05


def test_delta_mode_quantises_the_difference_and_needs_the_base():
    base = (rng.standard_normal((32, 32)) * 0.05).astype(np.float32)
    tuned = base + (rng.standard_normal((32, 32)) * 1e-3).astype(np.float32)
    spec = _spec(base.shape)
    for codec in (HyperCodec(n=255, M=3, auto_l=True, on_delta=True), RTNCodec(bits=4, on_delta=True)):
        restored, chunks = _roundtrip(codec, spec, tuned.tobytes(), base.tobytes())
        got = np.frombuffer(restored, np.float32).reshape(spec.shape)
        assert chunks[0].meta["delta"] is True
        assert np.abs(got - tuned).max() < 2e-3  # the delta's scale, not the weights'
        with pytest.raises(WrongBaseError):
            codec.decode_tensor(spec, chunks, None, memoryview(bytearray(spec.nbytes)))


def test_non_finite_and_threshold_tensors_are_stored_raw_and_listed():
    w = (rng.standard_normal((8, 16)) * 0.02).astype(np.float32)
    bad = w.copy()
    bad[3, 4] = np.nan
    codec = HyperCodec(l=0.1, n=15, M=0, max_error=1e-4)
    codec.prepare()
    for name, arr in (("nan", bad), ("coarse", w)):
        restored, chunks = _roundtrip(codec, _spec(arr.shape, name=name), arr.tobytes())
        assert restored == arr.tobytes()  # byte-identical, NaN included
        assert chunks[0].coder != "hyper" and "fallback" in chunks[0].meta
    report = codec.encode_report()
    assert [r["name"] for r in report["raw_fallback"]] == ["nan", "coarse"]
    assert "NaN" in report["raw_fallback"][0]["reason"] and "max_error" in report["raw_fallback"][1]["reason"]
    assert report["quantised_tensors"] == 0 and report["lossless_tensors"] == 2


@pytest.mark.parametrize("config", [{"id": "hyper", "l": 0.0}, {"id": "hyper", "l": -1.0},
                                    {"id": "hyper", "n": 3}, {"id": "hyper", "M": -1}, {"id": "hyper", "M": 65},
                                    {"id": "hyper", "trajectory": "spiral"},
                                    {"id": "hyper", "trajectory": "winding", "n": 5000},
                                    {"id": "hyper", "device": "gpu"},
                                    {"id": "hyper", "trajectory": "winding", "device": "cuda"},
                                    {"id": "rtn", "bits": 1}, {"id": "rtn", "bits": 9},
                                    {"id": "rtn", "granularity": "tensor"}, {"id": "rtn", "nope": 1}])
def test_bad_options_are_refused(config):
    with pytest.raises(ConfigError):
        get_codec(config)


@pytest.mark.parametrize("codec", [HyperCodec(n=63, M=2), RTNCodec(bits=5)], ids=repr)
def test_cut_side_information_or_payload_is_a_corrupt_artifact(codec):
    w = (rng.standard_normal((8, 40)) * 0.02).astype(np.float32)
    spec = _spec(w.shape)
    chunks = list(codec.encode_tensor(spec, memoryview(w.tobytes()), None))
    out = memoryview(bytearray(spec.nbytes))
    keys = [k for k in chunks[0].meta if k != "n"] + ["n"]
    for key in keys:
        meta = {k: v for k, v in chunks[0].meta.items() if k != key}
        with pytest.raises(CorruptArtifactError):
            codec.decode_tensor(spec, [EncodedChunk(codec.codec_id, chunks[0].payload, meta)], None, out)
    with pytest.raises(CorruptArtifactError):
        codec.decode_tensor(spec, [EncodedChunk(codec.codec_id, chunks[0].payload[:-1], chunks[0].meta)], None, out)
    if isinstance(codec, HyperCodec):  # an index beyond (n+1)(M+1)
        with pytest.raises(CorruptArtifactError, match="out of range"):
            codec.decode_tensor(spec, [EncodedChunk("hyper", b"\xff" * len(chunks[0].payload),
                                                    chunks[0].meta)], None, out)


@pytest.mark.parametrize("config", [{"id": "hyper", "n": 255, "M": 3, "auto_l": True},
                                    {"id": "hyper", "n": 255, "M": 3, "auto_l": True, "on_delta": True},
                                    {"id": "rtn", "bits": 4}, {"id": "rtn", "bits": 8, "on_delta": True}],
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_model_round_trip_keeps_every_lossless_tensor_byte_identical(config, tmp_path):
    import torch
    from safetensors.torch import load_file

    base_dir, ft_dir = make_pair(tmp_path)
    codec = get_codec(config)
    summary = modelcodecs.compress_model(ft_dir, tmp_path / "a.dvz", codec=codec,
                                         base_dir=base_dir if codec.needs_base else None, threads=2)
    report = summary.codec_report
    assert report["quantised_tensors"] >= 3 and report["lossless_tensors"] >= 5
    assert 0 < report["relative_weight_error"] < 0.2
    modelcodecs.decompress_model(tmp_path / "a.dvz", tmp_path / "out",
                                 base_dir=base_dir if codec.needs_base else None)
    src = load_file(str(ft_dir / "model.safetensors"))
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(src) == set(got)
    names = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16", "torch.float64": "F64"}
    quantised = 0
    for name, t in src.items():
        assert got[name].shape == t.shape and got[name].dtype == t.dtype
        if codec.quantises(TensorSpec(name, names.get(str(t.dtype), "I8"), tuple(t.shape))):
            quantised += 1
            assert (got[name].double() - t.double()).norm() <= 0.2 * t.double().norm() + 1e-6
        else:
            assert got[name].reshape(-1).view(torch.uint8).equal(t.reshape(-1).view(torch.uint8)), name
    assert quantised >= 3
    for name in ("README.md", "config.json", "tokenizer/tokenizer.json"):
        assert (tmp_path / "out" / name).read_bytes() == (ft_dir / name).read_bytes()


def test_bench_configs_sit_at_their_bits_per_weight_and_speed_reports_the_numpy_baseline():
    from modelcodecs.bench_lossy import HYPER_AT_BITS, configs, main, speed

    for bits, (n, m) in HYPER_AT_BITS.items():
        assert index_bits(n, m) == 2 * bits  # two weights per index: no bit of the index wasted
    labels = [label for label, _ in configs()]
    assert len(labels) == len(set(labels)) == 21 and "hyper-delta-8" in labels and "rtn-weights-3" in labels
    with pytest.raises(ConfigError, match="nothing to measure"):
        main(["--speed-only", "--no-speed"])
    result = speed((64, 128), repeat=1)
    assert [r["codec"] for r in result["rows"]][0] == "numpy rtn-4 (baseline)"
    assert all(r["encode_mweights_s"] > 0 and r["decode_mweights_s"] > 0 for r in result["rows"])
    assert {r["codec"].split(" ")[0] for r in result["rows"][1:]} == {"rtn-3", "rtn-5", "rtn-8", "hyper-3", "hyper-5",
                                                                      "hyper-8"}


@pytest.mark.parametrize("codec", [HyperCodec(n=255, M=3, auto_l=True), HyperCodec(l=0.02, n=100, M=2,
                                                                                    trajectory="winding"),
                                   RTNCodec(bits=3), RTNCodec(bits=7, granularity="group", group_size=24)], ids=repr)
def test_the_encoders_error_is_the_error_of_what_the_decoder_restores(codec):
    """The kernels write the reconstruction while encoding; it must be exactly what decoding produces."""
    w = (rng.standard_t(4, (37, 51)) * 0.03).astype(np.float32)  # odd size: hyper's last pair is padded
    codec.prepare()
    restored, _ = _roundtrip(codec, _spec(w.shape), w.tobytes())
    exact = w.reshape(-1).astype(np.float64)
    err = np.frombuffer(restored, np.float32) - exact
    report = codec.encode_report()
    assert report["relative_weight_error"] == pytest.approx(np.linalg.norm(err) / np.linalg.norm(exact), rel=1e-12)
    assert report["mean_abs_error"] == pytest.approx(np.abs(err).mean(), rel=1e-12)


GENERIC_CHILD = r"""
import sys
import numpy as np
from modelcodecs import _lossy_kernels, get_codec
from modelcodecs.abc import TensorSpec
assert _lossy_kernels.isa() == "baseline", _lossy_kernels.isa()
folder = sys.argv[1]
w = np.load(f"{folder}/w.npy")
spec = TensorSpec("w", "F32", w.shape)
for i, config in enumerate(eval(open(f"{folder}/configs").read())):
    chunks = list(get_codec(config).encode_tensor(spec, memoryview(w.tobytes()), None))
    assert b"".join(c.payload for c in chunks) == open(f"{folder}/payload.{i}", "rb").read(), config
    out = bytearray(spec.nbytes)
    get_codec(config).decode_tensor(spec, chunks, None, memoryview(out))
    assert bytes(out) == open(f"{folder}/decoded.{i}", "rb").read(), config
print("generic build agrees")
"""


def test_generic_build_matches_dispatched_build(tmp_path):
    """The baseline-ISA clone of the kernels (forced with LOSSY_GENERIC=1) writes the same payloads and decodes
    to the same bytes as the build this CPU dispatches to."""
    import os
    import subprocess
    import sys

    w = (rng.standard_t(4, (64, 333)) * 0.03).astype(np.float32)
    configs = [{"id": "hyper", "n": 255, "M": 3, "auto_l": True}, {"id": "hyper", "n": 99, "M": 0, "l": 0.05},
               {"id": "hyper", "n": 100, "M": 2, "l": 0.05, "trajectory": "winding"},
               {"id": "rtn", "bits": 3}, {"id": "rtn", "bits": 8, "granularity": "group", "group_size": 40}]
    np.save(tmp_path / "w.npy", w)
    (tmp_path / "configs").write_text(repr(configs))
    spec = _spec(w.shape)
    for i, config in enumerate(configs):
        restored, chunks = _roundtrip(get_codec(config), spec, w.tobytes())
        (tmp_path / f"payload.{i}").write_bytes(b"".join(c.payload for c in chunks))
        (tmp_path / f"decoded.{i}").write_bytes(restored)
    result = subprocess.run([sys.executable, "-c", GENERIC_CHILD, str(tmp_path)], capture_output=True, text=True,
                            env=dict(os.environ, LOSSY_GENERIC="1"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "generic build agrees" in result.stdout


@pytest.mark.parametrize("codec", [HyperCodec(n=255, M=3, auto_l=True), RTNCodec(bits=5)], ids=repr)
def test_misaligned_source_and_destination_buffers_give_the_same_bytes(codec):
    """Safetensors offsets need not be 4-byte aligned: the codecs copy a misaligned float32 tensor, and decode
    through a buffer of their own into a misaligned destination."""
    w = (rng.standard_normal((24, 40)) * 0.02).astype(np.float32)
    spec = _spec(w.shape)
    aligned, chunks = _roundtrip(codec, spec, w.tobytes())
    shifted = bytearray(1 + spec.nbytes)
    shifted[1:] = w.tobytes()
    moved = list(codec.encode_tensor(spec, memoryview(shifted)[1:], None))
    assert [c.payload for c in moved] == [c.payload for c in chunks]
    out = bytearray(1 + spec.nbytes)
    codec.decode_tensor(spec, chunks, None, memoryview(out)[1:])
    assert bytes(out[1:]) == aligned


# -- hyper's torch encode (CUDA; checked here on CPU torch) ---------------------------------------------------------

@pytest.mark.parametrize("n", LATTICE_SIZES)
def test_torch_closed_form_gives_the_native_kernels_indices(n):
    torch = pytest.importorskip("torch")
    l = 0.3
    u = local_points(l)
    native = nearest_lattice(u[:, 0], u[:, 1], l, n)
    ux, uy = torch.from_numpy(u[:, 0].copy()), torch.from_numpy(u[:, 1].copy())
    np.testing.assert_array_equal(_torch_lattice_nearest(ux, uy, l, n).numpy(), native)


@pytest.mark.parametrize("config,size", [({"n": 1600, "M": 3, "auto_l": True}, 60_000),
                                         ({"n": 255, "M": 3, "auto_l": True, "coverage": 0.6}, 60_001),
                                         ({"n": 99, "M": 0, "l": 0.02}, 30_001),
                                         ({"n": 15, "M": 2, "l": 0.05}, 30_000),
                                         ({"n": 4, "M": 64, "auto_l": True, "coverage": 0.5}, 9_999)])
def test_torch_encode_writes_the_native_kernels_payload_and_restored_values(config, size):
    pytest.importorskip("torch")
    w = (rng.standard_t(4, size) * 0.03).astype(np.float32)
    codec = HyperCodec(**config)
    side = codec._side(codec._tensor_side(w, _spec((1, size))), "w")
    args = codec._kernel_side(side)
    packed = np.empty(_lossy_kernels.packed_bytes((size + 1) // 2, args[-1]), np.uint8)
    restored = np.empty_like(w)
    _lossy_kernels.hyper_quantise(w, *args, packed, restored)
    indices = np.empty((size + 1) // 2, np.uint32)
    _lossy_kernels.unpack(packed, args[-1], indices)
    assert indices.max() >= codec.n + 1 or codec.M == 0  # some pairs lie in rings
    np.testing.assert_array_equal(_torch_pair_indices(w, side, "cpu"), indices)
    torch_packed, torch_restored = np.empty_like(packed), np.empty_like(w)
    _torch_quantise(w, args, side, "cpu", torch_packed, torch_restored)
    assert torch_packed.tobytes() == packed.tobytes() and torch_restored.tobytes() == restored.tobytes()


def test_hyper_device_auto_runs_on_cpu_here_and_cuda_without_a_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    w = (rng.standard_normal((16, 64)) * 0.02).astype(np.float32)
    spec = _spec(w.shape)
    assert encode_device("auto") == "cpu"
    on_auto = list(HyperCodec(device="auto").encode_tensor(spec, memoryview(w.tobytes()), None))
    on_cpu = list(HyperCodec().encode_tensor(spec, memoryview(w.tobytes()), None))
    assert [c.payload for c in on_auto] == [c.payload for c in on_cpu]
    with pytest.raises(ConfigError, match="no CUDA device"):
        list(HyperCodec(device="cuda").encode_tensor(spec, memoryview(w.tobytes()), None))
    # the config (device included) is rebuilt to decode: that needs no GPU
    assert HyperCodec.from_config(HyperCodec(device="cuda").get_config()).device == "cuda"


CPU_ENCODE_CHILD = """
import sys
import numpy as np
from modelcodecs import HyperCodec
from modelcodecs.abc import TensorSpec
w = np.ones((4, 8), np.float32)
list(HyperCodec(device="cpu", auto_l=True).encode_tensor(TensorSpec("w", "F32", (4, 8)), memoryview(w.tobytes()), None))
assert "torch" not in sys.modules, "torch was imported"
"""


def test_hyper_on_cpu_does_not_import_torch():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", CPU_ENCODE_CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
