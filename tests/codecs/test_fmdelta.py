"""FM-Delta codec: bit-exact round trips, fallbacks, chunking, threads, cancellation and hostile payloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcodecs import _fmdelta
from modelcodecs._threads import get_executor, resolve_threads, usable_cores
from modelcodecs.abc import DTYPE_SIZES, FLOAT_DTYPES, EncodedChunk, TensorSpec
from modelcodecs.container import unpack_chunks
from modelcodecs.errors import (
    CancelledError,
    ConfigError,
    CorruptArtifactError,
    ModelFormatError,
    UnsupportedDtypeError,
    WrongBaseError,
)
from modelcodecs.fmdelta import FMDeltaCodec, symbol_entropy_bound

from common import check_config, check_encode_decode, check_err_decode_object_buffer, check_repr

ALL_DTYPES = sorted(DTYPE_SIZES)
FLOATS = sorted(FLOAT_DTYPES)
BITS = {"F8_E4M3": 8, "F8_E5M2": 8, "F16": 16, "BF16": 16, "F32": 32, "F64": 64}
UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# -- helpers ------------------------------------------------------------------------------------------------------

def round_trip(codec, dtype, shape, data: bytes, base: bytes | None, threads=1):
    spec = TensorSpec("t", dtype, tuple(shape))
    chunks = list(codec.encode_tensor(spec, memoryview(data), None if base is None else memoryview(base),
                                      threads=threads))
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, None if base is None else memoryview(base), memoryview(out), threads=threads)
    assert bytes(out) == data
    return chunks


def weights(n, seed=0, scale=0.02):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(6, n) * scale).astype(np.float32)


def to_bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values -> unsigned bit patterns of ``dtype`` (bf16 by rounding to nearest even, f8 by truncation)."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "F32":
        return values.view(np.uint32)
    if dtype == "F64":
        return values.astype(np.float64).view(np.uint64)
    if dtype == "F16":
        return values.astype(np.float16).view(np.uint16)
    u = values.view(np.uint32).astype(np.uint64)
    if dtype == "BF16":
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    # crude f8 patterns: sign + top bits (any bit pattern is a valid f8 value for the codec)
    return (u >> 24).astype(np.uint8)


def pair(n, dtype, sigma, seed=0, unchanged=0.0):
    rng = np.random.default_rng(seed + 1)
    base = weights(n, seed)
    ft = base + rng.normal(0, sigma, n).astype(np.float32)
    if unchanged:
        ft = np.where(rng.random(n) < unchanged, base, ft)
    return to_bits(ft, dtype).tobytes(), to_bits(base, dtype).tobytes()


def special_patterns(dtype: str) -> list[int]:
    bits = BITS[dtype]
    sign = 1 << (bits - 1)
    top = (1 << bits) - 1
    ebits = {"F8_E4M3": 4, "F8_E5M2": 5, "F16": 5, "BF16": 8, "F32": 8, "F64": 11}[dtype]
    mbits = bits - 1 - ebits
    inf = ((1 << ebits) - 1) << mbits
    pats = [0, sign, 1, sign | 1, inf, sign | inf, inf | 1, inf | (1 << (mbits - 1)), sign | inf | 3, top,
            sign - 1, (1 << mbits) - 1, 1 << mbits, (inf - 1), 0x55 & top]
    return sorted({p & top for p in pats})


# -- numcodecs-style checks (the buffer interface codes bytes without a base) -----------------------------------------

codecs = [FMDeltaCodec(), FMDeltaCodec(chunk_elements=4096, context="none", shift_zero_mantissa=False)]
arrays = [
    np.arange(10000, dtype="<i4"),
    np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8),
    np.linspace(-1, 1, 9000, dtype="<f4").reshape(90, 100),
    np.zeros(0, dtype=np.uint8),
]


@pytest.mark.parametrize("codec", codecs, ids=repr)
@pytest.mark.parametrize("arr", arrays, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_encode_decode(codec, arr):
    check_encode_decode(codec, arr)


@pytest.mark.parametrize("codec", codecs, ids=repr)
def test_config_repr_and_bad_buffers(codec):
    check_config(codec)
    check_repr(codec)
    check_err_decode_object_buffer(codec)


# -- round trips ----------------------------------------------------------------------------------------------------

shapes = st.one_of(
    st.just(()),
    st.lists(st.integers(0, 6), min_size=1, max_size=3).map(tuple),
    st.tuples(st.integers(1, 3), st.integers(4000, 5000)),  # several chunks at chunk_elements=4096
)


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(ALL_DTYPES))
    shape = draw(shapes)
    item = DTYPE_SIZES[dtype]
    n = int(np.prod(shape)) if shape else 1
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, n * item, dtype=np.uint8).tobytes()
    kind = draw(st.sampled_from(["near", "random", "equal", "no-base"]))
    if kind == "random":
        data = rng.integers(0, 256, n * item, dtype=np.uint8).tobytes()
    elif kind == "equal":
        data = base
    else:  # small integer steps on the raw bit patterns, wrapping, some elements unchanged
        b = np.frombuffer(base, dtype=UINT[item])
        step = rng.integers(-3, 4, n).astype(np.int64).astype(UINT[item])
        data = (b + step * (rng.random(n) < 0.7)).astype(UINT[item]).tobytes()
    return dtype, shape, data, None if kind == "no-base" else base


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(t=tensors(), context=st.sampled_from(["exponent", "none"]), shift=st.booleans())
def test_round_trip_property(t, context, shift):
    dtype, shape, data, base = t
    codec = FMDeltaCodec(chunk_elements=4096, context=context, shift_zero_mantissa=shift)
    chunks = round_trip(codec, dtype, shape, data, base)
    n = int(np.prod(shape)) if shape else 1
    assert sum(c.meta["n"] for c in chunks) == n
    assert len(chunks) == -(-n // 4096)
    # no chunk grows: each payload is at most its raw size
    for c in chunks:
        assert len(c.payload) <= c.meta["n"] * DTYPE_SIZES[dtype]
        if base is not None and dtype in FLOAT_DTYPES:
            assert c.coder in ("fmdelta", "raw")
        if base is None and dtype in FLOAT_DTYPES:
            assert c.coder in ("fields", "planes", "raw")


@pytest.mark.parametrize("dtype", FLOATS)
def test_special_values_all_pairs_bit_exact(dtype):
    item = DTYPE_SIZES[dtype]
    pats = special_patterns(dtype)
    b, f = zip(*[(x, y) for x in pats for y in pats])
    base = np.array(b, dtype=np.uint64).astype(UINT[item])
    ft = np.array(f, dtype=np.uint64).astype(UINT[item])
    for context in ("exponent", "none"):
        codec = FMDeltaCodec(chunk_elements=4096, context=context)
        chunks = round_trip(codec, dtype, (len(ft),), ft.tobytes(), base.tobytes())
        # also code the pairs with the native coder directly (the codec may have stored them raw)
        payload = _fmdelta.encode(ft.tobytes(), base.tobytes(), dtype, context == "exponent", True)
        out = bytearray(ft.nbytes)
        _fmdelta.decode(payload, base.tobytes(), out, dtype)
        assert bytes(out) == ft.tobytes()
        assert chunks


@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_payloads_and_signed_zeros_survive_against_weights(dtype):
    n = 3000
    data, base = pair(n, dtype, 1e-3, seed=3)
    item = DTYPE_SIZES[dtype]
    ft = np.frombuffer(data, dtype=UINT[item]).copy()
    pats = special_patterns(dtype)
    ft[::7] = np.array(pats * (len(ft[::7]) // len(pats) + 1), dtype=np.uint64)[: len(ft[::7])].astype(UINT[item])
    chunks = round_trip(FMDeltaCodec(chunk_elements=4096), dtype, (n,), ft.tobytes(), base)
    assert chunks[0].coder in ("fmdelta", "raw")


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("with_base", [True, False])
def test_zero_d_and_empty(dtype, with_base):
    item = DTYPE_SIZES[dtype]
    codec = FMDeltaCodec()
    one = bytes(range(1, item + 1))
    assert round_trip(codec, dtype, (), one, bytes(item) if with_base else None)
    assert round_trip(codec, dtype, (0, 5), b"", b"" if with_base else None) == []


@pytest.mark.slow  # importing torch alone takes seconds
def test_non_contiguous_torch_tensor_bytes():
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = (torch.randn(64, 96, generator=g) * 0.02).to(torch.bfloat16)
    ft = (base.float() + torch.randn(64, 96, generator=g) * 1e-4).to(torch.bfloat16)
    bt, ftt = base.t(), ft.t()  # non-contiguous views
    assert not ftt.is_contiguous()
    data = ftt.contiguous().view(torch.int16).numpy().tobytes()
    bdata = bt.contiguous().view(torch.int16).numpy().tobytes()
    chunks = round_trip(FMDeltaCodec(chunk_elements=4096), "BF16", (96, 64), data, bdata)
    assert chunks[0].coder == "fmdelta"


# -- ratio: the scheme's targets against FM-Delta's own order-0 bound ------------------------------------------------

def native_size(data, base, dtype, **options):
    codec = FMDeltaCodec(**options)
    n = len(data) // DTYPE_SIZES[dtype]
    chunks = list(codec.encode_tensor(TensorSpec("w", dtype, (n,)), memoryview(data), memoryview(base)))
    assert all(c.coder == "fmdelta" for c in chunks)
    return sum(len(c.payload) for c in chunks)


@pytest.mark.parametrize("sigma", [1e-5, 1e-4, 1e-3])
def test_bf16_beats_reference_bound_by_ten_percent(sigma):
    data, base = pair(1 << 18, "BF16", sigma, seed=11)
    assert native_size(data, base, "BF16") <= 0.90 * symbol_entropy_bound(data, base, "BF16")


@pytest.mark.parametrize("sigma,unchanged", [(1e-4, 0.0), (1e-4, 0.9), (1e-3, 0.0)])
def test_fp32_within_half_percent_of_reference_bound(sigma, unchanged):
    data, base = pair(1 << 18, "F32", sigma, seed=12, unchanged=unchanged)
    assert native_size(data, base, "F32") <= 1.005 * symbol_entropy_bound(data, base, "F32")


def test_context_helps_and_can_be_switched_off():
    data, base = pair(1 << 17, "BF16", 1e-4, seed=13)
    assert native_size(data, base, "BF16") < 0.95 * native_size(data, base, "BF16", context="none")


@pytest.mark.parametrize("unchanged", [0.0, 0.9])
def test_bf16_weights_stored_as_fp32_cost_about_bf16(unchanged):
    n = 1 << 17
    data16, base16 = pair(n, "BF16", 1e-4, seed=14, unchanged=unchanged)
    widen = lambda b: (np.frombuffer(b, np.uint16).astype(np.uint32) << 16).tobytes()  # noqa: E731
    data32, base32 = widen(data16), widen(base16)
    size16 = native_size(data16, base16, "BF16")
    size32 = native_size(data32, base32, "F32")
    assert size32 <= 1.05 * size16
    # the 16 bits left after the shift are coded exactly as bf16 is: only the header's dtype and shift differ
    p16, p32 = _fmdelta.encode(data16, base16, "BF16"), _fmdelta.encode(data32, base32, "F32")
    assert (p16[3], p16[4], p32[3], p32[4]) == (1, 0, 2, 16) and p16[5:] == p32[5:]
    payload = _fmdelta.encode(data32, base32, "F32", True, True)
    assert _fmdelta.shift_of(payload) == 16
    unshifted = _fmdelta.encode(data32, base32, "F32", True, False)
    assert _fmdelta.shift_of(unshifted) == 0
    assert len(unshifted) > 1.5 * size32
    out = bytearray(len(data32))
    _fmdelta.decode(payload, base32, out, "F32")
    assert bytes(out) == data32


def test_shift_only_when_both_sides_have_zero_bits():
    data16, base16 = pair(5000, "BF16", 1e-4, seed=15)
    data32 = (np.frombuffer(data16, np.uint16).astype(np.uint32) << 16).tobytes()
    base32 = weights(5000, 15).tobytes()  # full fp32 base
    payload = _fmdelta.encode(data32, base32, "F32", True, True)
    assert _fmdelta.shift_of(payload) == 0
    round_trip(FMDeltaCodec(chunk_elements=4096), "F32", (5000,), data32, base32)


def reference_bound_numpy(data: bytes, base: bytes, dtype: str) -> float:
    """Independent numpy version of the reference FM-Delta symbol statistics."""
    bits = BITS[dtype]
    u = UINT[bits // 8]
    f = np.frombuffer(data, u).astype(object)
    b = np.frombuffer(base, u).astype(object)
    top, mask = 1 << (bits - 1), (1 << bits) - 1
    mp = lambda v: (~v) & mask if v & top else v | top  # noqa: E731
    counts: dict[int, int] = {}
    raw = 0
    for x, y in zip(f, b):
        r, p = mp(int(x)), mp(int(y))
        d = abs(r - p)
        k = d.bit_length() - 1 if d else -1
        sym = bits if d == 0 else (bits + 1 + k if r > p else bits - 1 - k)
        counts[sym] = counts.get(sym, 0) + 1
        raw += max(k, 0)
    c = np.array(list(counts.values()), dtype=np.float64)
    return float((c * np.log2(c.sum() / c)).sum() + raw) / 8


@pytest.mark.parametrize("dtype", FLOATS)
def test_symbol_entropy_bound_matches_independent_computation(dtype):
    data, base = pair(2000, dtype, 1e-3, seed=16)
    assert symbol_entropy_bound(data, base, dtype) == pytest.approx(reference_bound_numpy(data, base, dtype),
                                                                    rel=1e-9)
    assert symbol_entropy_bound(base, base, dtype) == 0.0


def test_symbol_entropy_bound_rejects_ints():
    with pytest.raises(UnsupportedDtypeError):
        symbol_entropy_bound(b"\0\0", b"\0\0", "I16")


# -- fallbacks and other coders ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["F32", "BF16", "I32", "U8"])
def test_random_data_falls_back_to_raw(dtype):
    rng = np.random.default_rng(5)
    item = DTYPE_SIZES[dtype]
    n = 9000
    data = rng.integers(0, 256, n * item, dtype=np.uint8).tobytes()
    base = rng.integers(0, 256, n * item, dtype=np.uint8).tobytes()
    for b in (base, None):
        chunks = round_trip(FMDeltaCodec(chunk_elements=4096), dtype, (n,), data, b)
        assert [c.coder for c in chunks] == ["raw"] * 3
        assert sum(len(c.payload) for c in chunks) == len(data)


def test_integers_and_bools_xor_with_base():
    rng = np.random.default_rng(6)
    base = rng.integers(-1000, 1000, 20000).astype(np.int64)
    ft = base.copy()
    ft[rng.random(20000) < 0.01] += 1
    chunks = round_trip(FMDeltaCodec(chunk_elements=8192), "I64", (20000,), ft.tobytes(), base.tobytes())
    assert {c.coder for c in chunks} == {"planes"}
    assert all(c.meta["xor"] for c in chunks)
    assert sum(len(c.payload) for c in chunks) < ft.nbytes / 20
    flags = (rng.random(10000) < 0.5).astype(np.uint8)
    round_trip(FMDeltaCodec(), "BOOL", (100, 100), flags.tobytes(), flags.tobytes())
    round_trip(FMDeltaCodec(), "BOOL", (100, 100), flags.tobytes(), None)


@pytest.mark.parametrize("dtype,limit", [("BF16", 0.68), ("F16", 0.87), ("F32", 0.85), ("F64", 0.9),
                                         ("F8_E4M3", 0.8), ("F8_E5M2", 0.8)])
def test_floats_without_base_code_their_fields(dtype, limit):
    data, _ = pair(50000, dtype, 1e-4)
    chunks = round_trip(FMDeltaCodec(), dtype, (50000,), data, None)
    assert [c.coder for c in chunks] == ["fields"]
    assert len(chunks[0].payload) < limit * len(data)
    # bf16 values stored as fp32 without a base: the zero mantissa bits are shifted out here too
    if dtype == "BF16":
        wide = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).tobytes()
        (wide_chunk,) = round_trip(FMDeltaCodec(), "F32", (50000,), wide, None)
        assert _fmdelta.shift_of(wide_chunk.payload) == 16
        assert len(wide_chunk.payload) <= 1.01 * len(chunks[0].payload)


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_degenerate_floats_without_base_cost_next_to_nothing(dtype):
    """A zero-initialised tensor the base lacks costs next to nothing (fields, or byte planes when smaller)."""
    zeros = bytes(1 << 20)
    chunks = round_trip(FMDeltaCodec(), dtype, (len(zeros) // DTYPE_SIZES[dtype],), zeros, None)
    assert {c.coder for c in chunks} <= {"fields", "planes"}
    assert sum(len(c.payload) for c in chunks) < len(zeros) / 1000
    data, _ = pair(50000, dtype, 1e-4)  # ordinary weights keep the fields coder
    assert [c.coder for c in round_trip(FMDeltaCodec(), dtype, (50000,), data, None)] == ["fields"]


def test_f64_without_base_escapes_far_exponents():
    """F64 exponents outside the chunk's 254-wide window (huge, tiny, NaN, Inf, denormals) are escaped raw."""
    values = weights(20000, 4).astype(np.float64)
    values[::97] = np.array([1e300, -1e-300, np.inf, np.nan, 5e-324, -0.0])[np.arange(len(values[::97])) % 6]
    chunks = round_trip(FMDeltaCodec(), "F64", (20000,), values.tobytes(), None)
    assert [c.coder for c in chunks] == ["fields"]
    assert len(chunks[0].payload) < 0.9 * values.nbytes


def test_older_exponent_payloads_still_decode():
    """Payloads of the exponent-only no-base mode (mode 1, written before the fields mode) decode as before."""
    fixture = Path(__file__).parent / "fixture" / "fmdelta"
    found = 0
    for config in sorted(fixture.glob("codec.*/config.json")):
        for encoded in sorted(config.parent.glob("encoded.*.dat")):
            _, chunks = unpack_chunks(encoded.read_bytes())
            found += sum(c.coder == "exponent" for c in chunks)
    assert found, "the fixtures hold exponent-mode chunks"


def test_unknown_dtype_is_rejected():
    with pytest.raises(UnsupportedDtypeError):
        list(FMDeltaCodec().encode_tensor(TensorSpec("t", "C64", (2,)), memoryview(bytes(16)), None))


def test_wrong_sizes_are_rejected():
    codec = FMDeltaCodec()
    spec = TensorSpec("t", "F32", (4,))
    with pytest.raises(ModelFormatError):
        list(codec.encode_tensor(spec, memoryview(bytes(12)), None))
    with pytest.raises(WrongBaseError):
        list(codec.encode_tensor(spec, memoryview(bytes(16)), memoryview(bytes(8))))
    with pytest.raises(ModelFormatError):
        codec.decode_tensor(spec, [], None, memoryview(bytearray(12)))
    with pytest.raises(ModelFormatError):
        codec.decode_tensor(spec, [], None, memoryview(bytes(16)))


# -- config -------------------------------------------------------------------------------------------------------

def test_config_round_trip_via_json():
    codec = FMDeltaCodec(chunk_elements=8192, context="none", shift_zero_mantissa=False)
    config = json.loads(json.dumps(codec.get_config()))
    assert config == {"id": "fmdelta", "chunk_elements": 8192, "context": "none", "shift_zero_mantissa": False}
    again = FMDeltaCodec.from_config(config)
    assert again == codec and hash(again) == hash(codec)
    assert "chunk_elements=8192" in repr(again)
    assert FMDeltaCodec().get_config() == {"id": "fmdelta", "chunk_elements": 1 << 20, "context": "exponent",
                                           "shift_zero_mantissa": True}


def test_registered_in_package():
    import modelcodecs

    assert modelcodecs.get_codec({"id": "fmdelta", "chunk_elements": 4096}) == FMDeltaCodec(chunk_elements=4096)
    schema = FMDeltaCodec.config_schema()
    assert schema["x-lossless"] and schema["x-needs-base"]
    assert schema["properties"]["context"]["enum"] == ["exponent", "none"]


@pytest.mark.parametrize("bad", [
    {"chunk_elements": 100}, {"chunk_elements": 1 << 27}, {"chunk_elements": "big"}, {"chunk_elements": True},
    {"chunk_elements": 4096.0}, {"context": "sign"}, {"shift_zero_mantissa": 1}, {"level": 3},
])
def test_bad_config_raises(bad):
    with pytest.raises(ConfigError):
        FMDeltaCodec(**bad)


# -- threads and cancellation ------------------------------------------------------------------------------------

def test_threads_give_identical_payloads():
    data, base = pair(20000, "F32", 1e-4, seed=7)
    codec = FMDeltaCodec(chunk_elements=4096)
    one = round_trip(codec, "F32", (20000,), data, base, threads=1)
    two = round_trip(codec, "F32", (20000,), data, base, threads=2)
    many = round_trip(codec, "F32", (20000,), data, base, threads=None)
    assert [(c.coder, c.payload, c.meta) for c in one] == [(c.coder, c.payload, c.meta) for c in two]
    assert [c.payload for c in one] == [c.payload for c in many]
    assert len(one) == 5


def test_cancel_raises_cancelled_error():
    data, base = pair(20000, "F32", 1e-4, seed=8)
    codec = FMDeltaCodec(chunk_elements=4096)
    spec = TensorSpec("t", "F32", (20000,))
    with pytest.raises(CancelledError):
        list(codec.encode_tensor(spec, memoryview(data), memoryview(base), cancel=lambda: True))
    chunks = list(codec.encode_tensor(spec, memoryview(data), memoryview(base)))
    calls = []

    def cancel_second_batch():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(CancelledError):
        codec.decode_tensor(spec, chunks, memoryview(base), memoryview(bytearray(len(data))),
                            cancel=cancel_second_batch)
    assert len(calls) == 2


def test_usable_cores_and_resolve_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DELTAVAULT_THREADS", raising=False)
    cores = usable_cores()
    assert cores >= 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1,2")
    assert usable_cores() == 1
    monkeypatch.setenv("DELTAVAULT_THREADS", "junk")
    assert usable_cores() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert usable_cores() == cores
    assert resolve_threads(None) == cores == resolve_threads(0)
    assert resolve_threads(3) == 3
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(ConfigError):
            resolve_threads(bad)


def _child_round_trip(data, base, queue):
    try:
        chunks = round_trip(FMDeltaCodec(chunk_elements=4096), "F32", (len(data) // 4,), data, base, threads=2)
        queue.put(len(chunks))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        queue.put(repr(exc))


def test_codec_works_in_a_forked_child_after_parent_used_threads():
    import multiprocessing

    data, base = pair(20000, "F32", 1e-4, seed=19)
    round_trip(FMDeltaCodec(chunk_elements=4096), "F32", (20000,), data, base, threads=2)  # parent pool exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_round_trip, args=(data, base, queue))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert result == 5 and child.exitcode == 0


def test_executor_is_recreated_after_fork(monkeypatch):
    from modelcodecs import _threads

    pool = get_executor(2)
    assert get_executor(2) is pool
    monkeypatch.setattr(_threads, "_pool_pid", -1)  # as seen from a forked child
    assert get_executor(2) is not pool


# -- hostile input -------------------------------------------------------------------------------------------------

def encoded(dtype="F32", n=9000, sigma=1e-4, seed=9):
    data, base = pair(n, dtype, sigma, seed=seed)
    codec = FMDeltaCodec(chunk_elements=4096)
    spec = TensorSpec("t", dtype, (n,))
    return codec, spec, data, base, list(codec.encode_tensor(spec, memoryview(data), memoryview(base)))


def decode(codec, spec, chunks, base):
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, None if base is None else memoryview(base), memoryview(out))
    return bytes(out)


@pytest.mark.parametrize("dtype", FLOATS)
def test_truncated_payloads_raise(dtype):
    codec, spec, data, base, chunks = encoded(dtype)
    rng = random.Random(1)
    for _ in range(40):
        k = rng.randrange(len(chunks))
        bad = list(chunks)
        c = chunks[k]
        cut = rng.randrange(len(c.payload))
        bad[k] = EncodedChunk(c.coder, c.payload[:cut], dict(c.meta))
        with pytest.raises(CorruptArtifactError):
            decode(codec, spec, bad, base)


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F64", "F8_E4M3"])
def test_bounded_fuzz_of_chunk_decoder(dtype):
    """Random byte flips and insertions: an error or a decoded tensor, never a crash; most are detected."""
    codec, spec, data, base, chunks = encoded(dtype, sigma=1e-3)
    rng = random.Random(2)
    detected = 0
    trials = 150
    for _ in range(trials):
        k = rng.randrange(len(chunks))
        payload = bytearray(chunks[k].payload)
        if rng.random() < 0.8:
            for _ in range(rng.randint(1, 4)):
                payload[rng.randrange(len(payload))] ^= rng.randint(1, 255)
        else:
            payload.insert(rng.randrange(len(payload)), rng.randint(0, 255))
        bad = list(chunks)
        bad[k] = EncodedChunk(chunks[k].coder, bytes(payload), dict(chunks[k].meta))
        try:
            out = decode(codec, spec, bad, base)
        except CorruptArtifactError:
            detected += 1
        else:
            assert len(out) == len(data)
    assert detected > trials // 2


def test_planes_and_raw_corruption_raise():
    rng = np.random.default_rng(10)
    ints = rng.integers(0, 5, 10000).astype(np.int32).tobytes()
    codec = FMDeltaCodec()
    spec = TensorSpec("t", "I32", (10000,))
    (chunk,) = codec.encode_tensor(spec, memoryview(ints), None)
    assert chunk.coder == "planes"
    for payload in (chunk.payload[:-3], b"not zstd at all", chunk.payload[:10]):
        with pytest.raises(CorruptArtifactError):
            decode(codec, spec, [EncodedChunk("planes", payload, chunk.meta)], None)
    with pytest.raises(CorruptArtifactError):
        decode(codec, spec, [EncodedChunk("raw", ints[:-4], {"n": 10000})], None)


@pytest.mark.parametrize("mutate", [
    lambda cs: cs[:-1],
    lambda cs: cs + cs[-1:],
    lambda cs: [EncodedChunk("lzma", cs[0].payload, cs[0].meta)] + cs[1:],
    lambda cs: [EncodedChunk(cs[0].coder, cs[0].payload, {"n": cs[0].meta["n"] + 1})] + cs[1:],
    lambda cs: [EncodedChunk(cs[0].coder, cs[0].payload, {"n": "4096"})] + cs[1:],
    lambda cs: [EncodedChunk(cs[0].coder, cs[0].payload, {})] + cs[1:],
    lambda cs: [cs[0], cs[2], cs[1]],  # counts still sum up; the payload headers disagree
])
def test_inconsistent_chunk_lists_raise(mutate):
    codec, spec, data, base, chunks = encoded(n=10000)
    assert [c.meta["n"] for c in chunks] == [4096, 4096, 1808]
    with pytest.raises(CorruptArtifactError):
        decode(codec, spec, mutate(chunks), base)


def test_missing_base_raises_wrong_base():
    codec, spec, data, base, chunks = encoded()
    with pytest.raises(WrongBaseError):
        decode(codec, spec, chunks, None)
    assert decode(codec, spec, chunks, base) == data


def test_native_face_validates_sizes():
    with pytest.raises(ValueError):
        _fmdelta.encode(bytes(8), bytes(4), "F32")
    with pytest.raises(ValueError):
        _fmdelta.encode(bytes(6), bytes(6), "F32")
    with pytest.raises(ValueError):
        _fmdelta.encode(bytes(8), bytes(8), "I32")
    with pytest.raises(ValueError):
        _fmdelta.decode(b"", bytes(8), bytearray(4), "F32")
    with pytest.raises(CorruptArtifactError):
        _fmdelta.decode(b"", bytes(8), bytearray(8), "F32")
    payload = _fmdelta.encode(bytes(8), bytes(8), "F32")
    with pytest.raises(CorruptArtifactError):  # element count in the header differs
        _fmdelta.decode(payload, bytes(12), bytearray(12), "F32")
    with pytest.raises(CorruptArtifactError):  # dtype in the header differs
        _fmdelta.decode(payload, bytes(4), bytearray(4), "BF16")


def test_iter_ordered_keeps_order_and_propagates_errors():
    import time

    from modelcodecs._threads import iter_ordered

    def slow_square(x):
        time.sleep(0.002 * (5 - x % 5))
        return x * x

    assert list(iter_ordered(slow_square, range(12), 3)) == [x * x for x in range(12)]
    assert list(iter_ordered(slow_square, range(7), 2)) == [x * x for x in range(7)]

    def boom(x):
        if x == 4:
            raise CorruptArtifactError("bad chunk")
        return x

    with pytest.raises(CorruptArtifactError):
        list(iter_ordered(boom, range(10), 2))
    checks = []

    def stop_after_three():
        checks.append(1)
        if len(checks) > 3:
            raise CancelledError("stop")

    with pytest.raises(CancelledError):
        list(iter_ordered(lambda x: x, range(10), 2, stop_after_three))


def test_iter_ordered_lets_a_free_thread_run_ahead_of_a_slow_job():
    """Cores need not be equally fast: while job 0 is slow, the other thread runs three jobs past it."""
    import threading

    from modelcodecs._threads import iter_ordered

    started = [threading.Event() for _ in range(8)]

    def job(x):
        started[x].set()
        if x == 0:
            assert started[3].wait(timeout=10), "no job ran ahead of the slow one"
        return x

    assert list(iter_ordered(job, range(8), 2)) == list(range(8))


def test_iter_ordered_lets_go_of_each_result_once_yielded():
    """A compressed tensor's payloads must not pile up until its last chunk is done."""
    import weakref

    from modelcodecs._threads import iter_ordered

    class Payload:
        """Stands for a chunk's payload (weak references need a class instance)."""

    refs = {}

    def job(x):
        payload = Payload()
        refs[x] = weakref.ref(payload)
        return payload

    for k, payload in enumerate(iter_ordered(job, range(12), 2)):
        assert all(refs[j]() is None for j in range(k)), f"results before {k} are still held"
        del payload


def test_iter_ordered_runs_at_most_threads_jobs_at_once_on_a_larger_pool():
    import threading
    import time

    from modelcodecs._threads import iter_ordered

    get_executor(4)  # the shared pool now has 4 workers
    lock, running, peak = threading.Lock(), [0], [0]

    def job(x):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return x

    assert list(iter_ordered(job, range(16), 2)) == list(range(16))
    assert peak[0] <= 2


GENERIC_CHILD = r"""
import sys, numpy as np
from modelcodecs import _fmdelta
folder = sys.argv[1]
assert _fmdelta.isa() == "baseline", _fmdelta.isa()
for dtype in ["F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"]:
    data = open(f"{folder}/{dtype}.ft", "rb").read()
    base = open(f"{folder}/{dtype}.base", "rb").read()
    parent = open(f"{folder}/{dtype}.payload", "rb").read()
    for shift in (True, False):
        mine = _fmdelta.encode(data, base, dtype, True, shift)
        if shift:
            assert mine == parent, dtype
        out = bytearray(len(data))
        _fmdelta.decode(mine, base, out, dtype)
        assert bytes(out) == data, dtype
    out = bytearray(len(data))
    _fmdelta.decode(parent, base, out, dtype)
    assert bytes(out) == data, dtype
    alone = _fmdelta.encode(data, None, dtype)
    assert alone == open(f"{folder}/{dtype}.alone", "rb").read(), dtype
    out = bytearray(len(data))
    _fmdelta.decode(alone, None, out, dtype)
    assert bytes(out) == data, dtype
print("generic build agrees")
"""


def test_generic_build_matches_dispatched_build(tmp_path):
    """The baseline-ISA clone (forced with FMDELTA_GENERIC=1) writes the same payloads and decodes ours."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(17)
    for dtype in FLOATS:
        item = DTYPE_SIZES[dtype]
        n = 7000
        data, base = pair(n, dtype, 1e-3, seed=17)
        ft = np.frombuffer(data, UINT[item]).copy()
        flip = rng.random(n) < 0.05  # some sign flips and random patterns
        ft[flip] = rng.integers(0, 2 ** (8 * item) - 1, int(flip.sum()), dtype=np.uint64).astype(UINT[item])
        (tmp_path / f"{dtype}.ft").write_bytes(ft.tobytes())
        (tmp_path / f"{dtype}.base").write_bytes(base)
        (tmp_path / f"{dtype}.payload").write_bytes(_fmdelta.encode(ft.tobytes(), base, dtype, True, True))
        (tmp_path / f"{dtype}.alone").write_bytes(_fmdelta.encode(ft.tobytes(), None, dtype))
    env = dict(os.environ, FMDELTA_GENERIC="1")
    result = subprocess.run([sys.executable, "-c", GENERIC_CHILD, str(tmp_path)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "generic build agrees" in result.stdout


def test_cgroup_quota_is_respected(monkeypatch):
    from modelcodecs import _threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("DELTAVAULT_THREADS", raising=False)
    monkeypatch.setattr(_threads, "_read_cgroup_cpus", lambda: 1)
    monkeypatch.setattr(_threads, "_quota_cache", None)
    assert usable_cores() == 1
    monkeypatch.setattr(_threads, "_read_cgroup_cpus", lambda: None)
    monkeypatch.setattr(_threads, "_quota_cache", None)
    assert usable_cores() >= 1


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F8_E5M2", "F64"])
def test_fields_payloads_hostile(dtype):
    data, _ = pair(12000, dtype, 1e-4, seed=18)
    codec = FMDeltaCodec(chunk_elements=4096)
    spec = TensorSpec("t", dtype, (12000,))
    chunks = list(codec.encode_tensor(spec, memoryview(data), None))
    assert [c.coder for c in chunks] == ["fields"] * 3
    assert decode(codec, spec, chunks, None) == data
    rng = random.Random(3)
    for _ in range(60):
        k = rng.randrange(3)
        payload = bytearray(chunks[k].payload)
        truncated = rng.random() < 0.5
        if truncated:
            payload = payload[: rng.randrange(len(payload))]
        else:
            payload[rng.randrange(len(payload))] ^= rng.randint(1, 255)
        bad = list(chunks)
        bad[k] = EncodedChunk("fields", bytes(payload), dict(chunks[k].meta))
        if truncated:
            with pytest.raises(CorruptArtifactError):
                decode(codec, spec, bad, None)
        else:
            try:
                assert len(decode(codec, spec, bad, None)) == len(data)
            except CorruptArtifactError:
                pass
    # the two modes never stand in for each other
    n0 = chunks[0].meta["n"] * DTYPE_SIZES[dtype]
    with pytest.raises(CorruptArtifactError):
        _fmdelta.decode(chunks[0].payload, bytes(n0), bytearray(n0), dtype)
    with_base = _fmdelta.encode(data[:n0], data[:n0], dtype)
    with pytest.raises(CorruptArtifactError):
        _fmdelta.decode(with_base, None, bytearray(n0), dtype)
