"""The CLI progress bar keeps the verb and shortens the tensor name; a slow zstd level checks for a cancel
between small pieces of a chunk, so a cancel is prompt (issue 11 §3, §6)."""

from __future__ import annotations

import numpy as np
import pytest

import modelcodecs
from modelcodecs._bytecoding import CANCEL_PIECE, zstd_compress, zstd_decompress
from modelcodecs.abc import TensorSpec
from modelcodecs.cli import STAGE_WIDTH, short_stage


def test_short_stage_keeps_the_verb_and_the_end_of_the_name():
    stage = "compressing model.layers.0.self_attn.q_proj.weight.of.a.long.model"
    short = short_stage(stage)
    assert len(short) == STAGE_WIDTH
    assert short.startswith("compressing …") and short.endswith("long.model")
    assert short_stage("compressing x") == "compressing x"


def test_zstd_pieces_decode_to_the_same_bytes_and_check_cancel_between_them():
    data = np.random.default_rng(0).integers(0, 4, 4 * CANCEL_PIECE + 7, dtype=np.uint8).tobytes()
    calls = []
    payload = zstd_compress(data, 19, cancel=lambda: calls.append(1))
    assert len(calls) == 5
    assert zstd_decompress(payload, len(data), "t") == data


@pytest.mark.parametrize("codec_id", ["zstd", "xor-zstd"])
def test_a_cancel_stops_a_chunk_midway(codec_id):
    codec = modelcodecs.get_codec({"id": codec_id, "level": 19, "chunk_bytes": 16 * CANCEL_PIECE})
    data = np.random.default_rng(1).standard_normal(4 * CANCEL_PIECE).astype(np.float32)
    spec = TensorSpec("w", "F32", data.shape)
    checks = []

    def cancel() -> bool:
        checks.append(1)
        return len(checks) > 3  # the fourth check says stop: inside the first chunk of 16 pieces

    base = np.zeros_like(data) if codec.needs_base else None
    with pytest.raises(modelcodecs.CancelledError):
        list(codec.encode_tensor(spec, memoryview(data), memoryview(base) if base is not None else None,
                                 threads=1, cancel=cancel))
    assert len(checks) == 4
