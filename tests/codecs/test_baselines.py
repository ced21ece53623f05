"""The zstd and xor-zstd baseline codecs, checked with the shared numcodecs-style checkers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from common import check_config, check_encode_decode, check_err_decode_object_buffer, check_repr

from modelcodecs import XorZstdCodec, ZstdCodec, get_codec
from modelcodecs.abc import EncodedChunk, TensorSpec
from modelcodecs.errors import CancelledError, ConfigError, CorruptArtifactError, WrongBaseError

codecs = [ZstdCodec(), ZstdCodec(level=19, chunk_bytes=4096), XorZstdCodec(), XorZstdCodec(level=5,
                                                                                            chunk_bytes=4096)]
rng = np.random.default_rng(0)
arrays = [
    np.zeros(0, dtype=np.float32),
    np.arange(1000, dtype="<i4"),
    rng.standard_normal(3000).astype("<f4"),
    rng.standard_normal((40, 50)).astype("<f2"),
    rng.standard_normal(777).astype("<f8"),
    rng.integers(0, 256, 5000, dtype=np.uint8),
    (rng.random(999) > 0.5),
]


@pytest.mark.parametrize("codec, arr", list(itertools.product(codecs, arrays)), ids=str)
def test_encode_decode(codec, arr):
    check_encode_decode(codec, arr)


@pytest.mark.parametrize("codec", codecs, ids=repr)
def test_config_repr_errors(codec):
    check_config(codec)
    check_repr(codec)
    check_err_decode_object_buffer(codec)


def test_config_validation():
    assert ZstdCodec().get_config() == {"id": "zstd", "level": 3, "chunk_bytes": 4 << 20}
    for bad in ({"level": 0}, {"level": 20}, {"level": "3"}, {"level": True}, {"chunk_bytes": 10}, {"x": 1}):
        with pytest.raises(ConfigError):
            get_codec({"id": "zstd", **bad})
    assert XorZstdCodec.needs_base and not ZstdCodec.needs_base
    assert ZstdCodec.lossless and XorZstdCodec.lossless


def _tensor(dtype="F32", n=5000, seed=1):
    r = np.random.default_rng(seed)
    base = (r.standard_normal(n) * 0.02).astype("<f4")
    tuned = base + (r.standard_normal(n) * 1e-4).astype("<f4")
    return TensorSpec("w", dtype, (n,)), tuned.tobytes(), base.tobytes()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_xor_with_base_chunks_and_threads(threads):
    spec, data, base = _tensor()
    codec = XorZstdCodec(chunk_bytes=4096)
    chunks = list(codec.encode_tensor(spec, memoryview(data), memoryview(base), threads=threads))
    assert len(chunks) == 5  # 20000 bytes in 4096-byte chunks
    assert all(c.meta["xor"] for c in chunks if c.coder == "planes")
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, memoryview(base), memoryview(out), threads=threads)
    assert bytes(out) == data
    # the delta against the base pays: smaller than coding without it
    alone = sum(len(c.payload) for c in codec.encode_tensor(spec, memoryview(data), None))
    assert sum(len(c.payload) for c in chunks) < alone
    with pytest.raises(WrongBaseError):
        codec.decode_tensor(spec, chunks, None, memoryview(bytearray(spec.nbytes)))


def test_raw_fallback_for_random_bytes():
    data = np.random.default_rng(3).integers(0, 256, 10000, dtype=np.uint8).tobytes()
    spec = TensorSpec("r", "U8", (10000,))
    for codec in (ZstdCodec(chunk_bytes=4096), XorZstdCodec(chunk_bytes=4096)):
        chunks = list(codec.encode_tensor(spec, memoryview(data), None))
        assert {c.coder for c in chunks} == {"raw"}
        assert sum(len(c.payload) for c in chunks) == len(data)
        out = bytearray(len(data))
        codec.decode_tensor(spec, chunks, None, memoryview(out))
        assert bytes(out) == data


@pytest.mark.parametrize("make_bad", [
    lambda cs: cs[:-1],
    lambda cs: cs + [cs[0]],
    lambda cs: [EncodedChunk("lzma", c.payload, c.meta) for c in cs],
    lambda cs: [EncodedChunk(c.coder, c.payload, {**c.meta, "n": c.meta["n"] + 4}) for c in cs],
    lambda cs: [EncodedChunk(c.coder, c.payload, {**c.meta, "n": "4096"}) for c in cs],
    lambda cs: [EncodedChunk(c.coder, c.payload[:-3], c.meta) for c in cs],
    lambda cs: [EncodedChunk(c.coder, bytes(len(c.payload)), c.meta) for c in cs],
    lambda cs: [EncodedChunk(c.coder, c.payload, {**c.meta, "xor": 1}) for c in cs],
])
def test_hostile_chunks_are_refused(make_bad):
    spec, data, base = _tensor()
    codec = XorZstdCodec(chunk_bytes=4096)
    chunks = list(codec.encode_tensor(spec, memoryview(data), memoryview(base)))
    with pytest.raises(CorruptArtifactError):
        codec.decode_tensor(spec, make_bad(chunks), memoryview(base), memoryview(bytearray(spec.nbytes)))


def test_cancel_between_chunks():
    spec, data, base = _tensor(n=50000)
    with pytest.raises(CancelledError):
        list(ZstdCodec(chunk_bytes=4096).encode_tensor(spec, memoryview(data), None, cancel=lambda: True))
