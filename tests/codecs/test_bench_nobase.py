"""The no-base benchmark's bounds and whole-command runner (lmz itself is only run by the benchmark)."""

from __future__ import annotations

import numpy as np
from common import make_pair

from modelcodecs import _fmdelta
from modelcodecs.bench_nobase import format_case, run_case, tensor_bounds


def _bf16(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_bounds_sit_below_the_coder_and_agree_for_bf16_stored_as_fp32():
    rng = np.random.default_rng(3)
    rows = rng.standard_t(6, (64, 4096)) * 0.02 * rng.uniform(0.2, 5, (64, 1))  # rows of different scales
    bits = _bf16(rows.ravel())
    order0, context = tensor_bounds(bits.view(np.uint8), "BF16")
    payload = len(_fmdelta.encode(bits.tobytes(), None, "BF16"))
    assert context < order0 < bits.nbytes
    assert context <= payload < 1.02 * context  # the coder sits within 2% of its model's entropy (tables included)
    wide = (bits.astype(np.uint32) << 16).view(np.uint8)
    assert np.allclose(tensor_bounds(wide, "F32"), (order0, context))


def test_whole_command_case_restores_byte_for_byte(tmp_path):
    _, ft_dir = make_pair(tmp_path)
    case = run_case("tiny", ft_dir, tmp_path / "work", None, lambda msg: None)
    rows = {r["tool"]: r for r in case["rows"]}
    assert set(rows) == {"fmdelta-nobase", "zstd-3"}
    assert all(r["byte_identical"] for r in rows.values())
    assert max(case["bounds"]["context_bytes"], case["bounds"]["order0_bytes"]) <= case["bounds"]["tensor_bytes"]
    assert "| fmdelta-nobase |" in format_case(case)
