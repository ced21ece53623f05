"""Pair generators: they produce what they claim."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from modelcodecs import read_model_info, synthetic
from modelcodecs.errors import ConfigError

NP = {"F32": np.float32, "F64": np.float64, "F16": np.float16}


def load(folder):
    """{name: (dtype, shape, raw bytes)} read with the safetensors package (an independent reader)."""
    from safetensors import safe_open

    out = {}
    with safe_open(folder / "model.safetensors", framework="numpy") as fh:
        meta = fh.metadata()
        assert meta == {"format": "pt"}
    import json
    import struct

    raw = (folder / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        a, b = entry["data_offsets"]
        out[name] = (entry["dtype"], tuple(entry["shape"]), raw[8 + n + a:8 + n + b])
    return out


def as_float64(dtype, data):
    if dtype == "BF16":
        return (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return np.frombuffer(data, NP[dtype]).astype(np.float64)


def bits(dtype, data):
    return np.frombuffer(data, {"F64": np.uint64, "F32": np.uint32}.get(dtype, np.uint16))


# -- synthetic pairs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64"])
def test_pair_has_the_dtype_shapes_and_statistics_it_claims(tmp_path, dtype):
    n = 300_001
    pair = synthetic.make_synthetic_pair(tmp_path, dtype=dtype, n_elements=n, delta_sigma=1e-3, n_tensors=3,
                                         seed=1)
    base, ft = load(pair.base), load(pair.finetuned)
    assert list(base) == list(ft) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert sum(math.prod(shape) for _, shape, _ in base.values()) == n
    for name in base:
        assert base[name][0] == ft[name][0] == dtype
        assert base[name][1] == ft[name][1]
    b = np.concatenate([as_float64(dtype, d) for dtype_, _, d in base.values()])
    f = np.concatenate([as_float64(dtype, d) for dtype_, _, d in ft.values()])
    # Student-t(6) * 0.02 has standard deviation 0.02 * sqrt(6/4)
    assert b.std() == pytest.approx(0.02 * math.sqrt(1.5), rel=0.05)
    assert np.all(np.isfinite(b)) and np.all(np.isfinite(f))
    # the delta is N(0, 1e-3^2) up to the dtype's rounding (bf16 spacing near 0.02 is ~1.2e-4)
    assert (f - b).std() == pytest.approx(1e-3, rel=0.05)
    assert abs((f - b).mean()) < 1e-5
    info = read_model_info(pair.finetuned)
    assert info["dtypes"] == {dtype: 3} and info["parameter_count"] == n
    assert pair.info["dtype"] == dtype and pair.info["n_elements"] == n


def test_unchanged_fraction_is_exact(tmp_path):
    n = 123_457
    pair = synthetic.make_synthetic_pair(tmp_path, dtype="F64", n_elements=n, delta_sigma=1e-3,
                                         unchanged_fraction=0.9, n_tensors=2, seed=3)
    base, ft = load(pair.base), load(pair.finetuned)
    equal = sum(int(np.count_nonzero(bits("F64", base[k][2]) == bits("F64", ft[k][2]))) for k in base)
    # F64 spacing near 0.02 is ~3e-18: noise of sigma 1e-3 never rounds back to the base
    assert equal == round(0.9 * n) == pair.info["unchanged_forced"] == pair.info["equal"]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_unchanged_fraction_counts_at_least_the_forced_share(tmp_path, fraction):
    n = 50_000
    pair = synthetic.make_synthetic_pair(tmp_path, dtype="BF16", n_elements=n, delta_sigma=1e-4,
                                         unchanged_fraction=fraction, seed=2)
    base, ft = load(pair.base), load(pair.finetuned)
    equal = sum(int(np.count_nonzero(bits("BF16", base[k][2]) == bits("BF16", ft[k][2]))) for k in base)
    assert pair.info["unchanged_forced"] == round(fraction * n)
    assert equal == pair.info["equal"] >= round(fraction * n)
    if fraction < 1:
        assert equal < n


def test_bf16_stored_as_fp32_has_zero_low_bits_and_the_bf16_values(tmp_path):
    kw = dict(dtype="BF16", n_elements=40_000, delta_sigma=1e-4, seed=7)
    wide = synthetic.make_synthetic_pair(tmp_path / "wide", stored_as="F32", **kw)
    narrow = synthetic.make_synthetic_pair(tmp_path / "narrow", **kw)
    for folder_w, folder_n in ((wide.base, narrow.base), (wide.finetuned, narrow.finetuned)):
        w, nr = load(folder_w), load(folder_n)
        for name in w:
            assert w[name][0] == "F32" and nr[name][0] == "BF16"
            u = bits("F32", w[name][2])
            assert np.all(u & 0xFFFF == 0)
            assert np.array_equal((u >> 16).astype(np.uint16), bits("BF16", nr[name][2]))
    assert read_model_info(wide.finetuned)["dtypes"] == {"F32": 1}


def test_same_seed_same_bytes_whatever_the_thread_count(tmp_path):
    kw = dict(dtype="F32", n_elements=(1 << 20) + 5, delta_sigma=1e-4, unchanged_fraction=0.3, n_tensors=2, seed=5)
    a = synthetic.make_synthetic_pair(tmp_path / "a", threads=1, **kw)
    b = synthetic.make_synthetic_pair(tmp_path / "b", threads=2, **kw)
    c = synthetic.make_synthetic_pair(tmp_path / "c", threads=2, **{**kw, "seed": 6})
    for role in ("base", "finetuned"):
        assert (getattr(a, role) / "model.safetensors").read_bytes() == \
            (getattr(b, role) / "model.safetensors").read_bytes()
        assert (getattr(a, role) / "model.safetensors").read_bytes() != \
            (getattr(c, role) / "model.safetensors").read_bytes()


def test_bf16_rounding_is_round_to_nearest_even_from_float64():
    one = 1.0
    half_ulp = 2.0 ** -8  # bf16 keeps 7 mantissa bits: spacing 2^-7 at 1.0
    x = np.array([
        one + half_ulp,                 # exact tie -> even (1.0)
        one + 3 * half_ulp,             # exact tie -> even (1 + 2^-6)
        one + half_ulp + 2.0 ** -40,    # just above the tie: up, although float32 would round it onto the tie
        one + half_ulp - 2.0 ** -40,    # just below: down
        -(one + half_ulp + 2.0 ** -40),  # same for negatives
        0.02, -1e-30, 3.0e38,
    ])
    got = synthetic._f64_to_bf16_bits(x)
    assert list(got[:5]) == [0x3F80, 0x3F82, 0x3F81, 0x3F80, 0xBF81]
    # every float32 value: bf16 RNE of its bits
    rng = np.random.default_rng(0)
    f32 = (rng.standard_normal(10_000) * 0.05).astype(np.float32)
    u = f32.view(np.uint32).astype(np.uint64)
    expected = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    assert np.array_equal(synthetic._f64_to_bf16_bits(f32.astype(np.float64)), expected)


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "I8"}, "dtype"),
    ({"dtype": "F32", "stored_as": "BF16"}, "cannot store"),
    ({"dtype": "F64", "stored_as": "F32"}, "cannot store"),
    ({"n_elements": 0}, "n_elements"),
    ({"delta_sigma": -1.0}, "delta_sigma"),
    ({"unchanged_fraction": 1.5}, "unchanged_fraction"),
    ({"n_tensors": 0}, "n_tensors"),
])
def test_bad_arguments_raise_config_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        synthetic.make_synthetic_pair(tmp_path, **{"n_elements": 100, **kwargs})


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        synthetic.make_synthetic_pair(tmp_path, n_elements=100)
    assert (tmp_path / "base" / "keep.txt").read_text() == "mine"


def test_importing_synthetic_does_not_import_torch():
    code = ("import sys, modelcodecs.synthetic; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


# -- text ---------------------------------------------------------------------------------------------------------

def test_text_dataset_is_deterministic_and_has_the_lines(tmp_path):
    a = synthetic.write_text_dataset(tmp_path / "a.txt", n_lines=50, seed=1)
    b = synthetic.write_text_dataset(tmp_path / "b.txt", n_lines=50, seed=1)
    c = synthetic.write_text_dataset(tmp_path / "c.txt", n_lines=50, seed=2, domain="chat")
    assert a.read_text() == b.read_text() != c.read_text()
    lines = a.read_text().splitlines()
    assert len(lines) == 50 and all(line.strip() and line.isascii() for line in lines)
    with pytest.raises(ConfigError):
        synthetic.write_text_dataset(tmp_path / "d.txt", n_lines=0, seed=1)
    with pytest.raises(ConfigError, match="domain"):
        synthetic.write_text_dataset(tmp_path / "d.txt", n_lines=3, seed=1, domain="klingon")


# -- tiny transformer ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_pair_loads_offline_and_differs_from_its_base(tiny, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for folder in (tiny.base, tiny.finetuned):
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= \
            {p.name for p in folder.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny.base, local_files_only=True)
    ft = AutoModelForCausalLM.from_pretrained(tiny.finetuned, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny.finetuned, local_files_only=True)
    ids = tok("The worker stores the delta.")["input_ids"]
    assert tok.decode(ids) == "The worker stores the delta."
    sb, sf = base.state_dict(), ft.state_dict()
    assert sb.keys() == sf.keys()
    changed = [k for k in sb if not torch.equal(sb[k], sf[k])]
    assert len(changed) == len(sb)  # AdamW moves every parameter
    for k in sb:
        assert sb[k].dtype == torch.float32
        delta = (sf[k] - sb[k]).abs().max().item()
        assert 0 < delta < 1.0  # a fine-tune, not a new model
    info = read_model_info(tiny.finetuned)
    assert info["architecture"] == "LlamaForCausalLM" and info["dtypes"] == {"F32": info["tensor_count"]}


@pytest.mark.slow
def test_tiny_pair_in_bf16_is_saved_in_bf16(tiny_bf16):
    info = read_model_info(tiny_bf16.finetuned)
    assert info["dtypes"] == {"BF16": info["tensor_count"]}
