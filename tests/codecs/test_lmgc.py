"""LM-GC (``lmgc``): exact round trips with the built-in prior and a tiny causal LM prior, every serialisation
option, determinism across processes and thread counts, the per-window check, prior fingerprints, bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from common import check_config, check_encode_decode, check_repr
from lmgc_priors import SPECIALS, gradients, tiny_lm_prior, write_gradient_folder

import modelcodecs
from modelcodecs.abc import TensorSpec
from modelcodecs.container import pack_chunks, unpack_chunks
from modelcodecs.errors import (ConfigError, CorruptArtifactError, ModelCodecError, ModelFormatError,
                                WrongPriorError)
from modelcodecs.gradients import GradientRecorder, gradient_set_info
from modelcodecs.lmgc import priors
from modelcodecs.lmgc.serialise import SEPARATORS, Serialisation

def roundtrip(codec, spec: TensorSpec, data: bytes, threads: int = 1) -> list:
    chunks = list(codec.encode_tensor(spec, memoryview(data), None, threads=threads))
    out = bytearray(spec.nbytes)
    codec.decode_tensor(spec, chunks, None, memoryview(out), threads=threads)
    assert bytes(out) == data
    return chunks


@pytest.fixture(scope="module")
def lm_prior(tmp_path_factory) -> Path:
    return tiny_lm_prior(tmp_path_factory.mktemp("prior") / "tiny-llama")


# -- built-in prior ----------------------------------------------------------------------------------------------

BF16 = "BF16"


@pytest.mark.parametrize("dtype,shape", [("F32", (3, 5, 7)), ("F32", (70000,)), ("F16", (33, 17)),
                                         (BF16, (64, 40)), ("F64", (500,)), ("F32", (0,)), ("F32", (1,)),
                                         ("I64", (300,)), ("BOOL", (257,)), ("U8", (1000,))])
def test_builtin_round_trips_every_dtype_and_shape(dtype, shape):
    n = int(np.prod(shape))
    if dtype == BF16:
        data = (gradients(n).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    elif dtype in ("F32", "F16", "F64"):
        data = gradients(n, {"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype]).tobytes()
    else:
        data = (np.random.default_rng(1).integers(0, 3, n)).astype(
            {"I64": np.int64, "BOOL": np.bool_, "U8": np.uint8}[dtype]).tobytes()
    codec = modelcodecs.get_codec({"id": "lmgc", "window_elements": 4096})
    chunks = roundtrip(codec, TensorSpec("g", dtype, shape), data)
    coders = {c.coder for c in chunks}
    assert coders <= ({"lmgc"} if dtype in ("F32", "F16", BF16, "F64") else {"fallback"})


@pytest.mark.parametrize("serialisation,separator,group", [("hex", s, 4) for s in SEPARATORS]
                         + [("hex", "none", g) for g in (1, 2, 8)] + [("iso", "none", 4), ("iso", "space", 2)])
def test_builtin_round_trips_every_serialisation(serialisation, separator, group):
    codec = modelcodecs.get_codec({"id": "lmgc", "serialisation": serialisation, "separator": separator,
                                   "bytes_per_group": group, "window_elements": 1024})
    data = gradients(5000).tobytes()
    roundtrip(codec, TensorSpec("g", "F32", (5000,)), data, threads=2)
    check_config(codec)
    check_repr(codec)
    check_encode_decode(codec, gradients(777))


@pytest.mark.parametrize("serialisation,separator,group", [("hex", s, g) for s in SEPARATORS for g in (1, 4, 3)]
                         + [("iso", s, g) for s in SEPARATORS for g in (1, 4)])
def test_serialisation_parses_back_exactly_and_refuses_anything_else(serialisation, separator, group):
    form = Serialisation(serialisation, separator, group)
    data = gradients(9).tobytes() + b"\x00\xff\x80"
    text = form.text(data)
    assert form.parse(text, len(data), "w") == data
    for bad in (text + "0", text[:-1], text.upper() if serialisation == "hex" else text + form.sep + "a",
                " " + text):
        if bad != text:
            with pytest.raises(CorruptArtifactError):
                form.parse(bad, len(data), "w")


def test_builtin_beats_lzma_and_ideal_matches_real_code_length():
    import lzma

    data = gradients(200_000).tobytes()
    codec = modelcodecs.get_codec("lmgc")
    chunks = list(codec.encode_tensor(TensorSpec("g", "F32", (200_000,)), memoryview(data), None))
    real = sum(len(c.payload) for c in chunks)
    ideal = sum(c.meta["ideal_bits"] for c in chunks) / 8
    assert abs(real - ideal) / real < 1e-3
    assert real < len(lzma.compress(data, preset=9))
    assert codec.stats.windows == len(chunks) and codec.stats.elements == 200_000
    assert 0 < codec.stats.bits_per_float < 32


def test_quantise_floors_every_symbol_and_is_the_only_table_maker():
    freq = priors.quantise(np.array([[1.0, 0.0, 1e-30, 0.5], [0.0, 0.0, 0.0, 1.0]]))
    assert freq.dtype == np.int64 and (freq >= 1).all() and (freq.sum(axis=1) <= priors.TOTAL).all()
    legal = np.array([True, False, True, True])
    masked = priors.quantise(np.array([0.2, 0.5, 0.0, 0.3]), legal)
    assert masked[1] == 0 and (masked[legal] >= 1).all()
    with pytest.raises(CorruptArtifactError):
        priors.quantise(np.array([np.nan, 1.0]))


def test_a_prediction_that_differs_on_the_decoding_side_is_caught_by_the_window_check(monkeypatch):
    codec = modelcodecs.get_codec({"id": "lmgc", "window_elements": 1024})
    spec = TensorSpec("g", "F32", (3000,))
    chunks = list(codec.encode_tensor(spec, memoryview(gradients(3000).tobytes()), None))
    real = priors.quantise

    def skewed(p, legal=None):  # the decoder's tables differ slightly from the encoder's
        freq = real(p, legal)
        freq[..., 0] += 5000
        return freq

    monkeypatch.setattr(priors, "quantise", skewed)
    with pytest.raises(CorruptArtifactError):
        codec.decode_tensor(spec, chunks, None, memoryview(bytearray(spec.nbytes)))


def test_mutated_payloads_raise_or_decode_exactly():
    """Payload bytes and meta are mutated and every checksum around them recomputed: only the codec's own checks
    (the range decoder, the window crc, the sizes) stand between a mutation and a wrong tensor."""
    codec = modelcodecs.get_codec({"id": "lmgc", "window_elements": 512})
    data = gradients(1500).tobytes()
    spec = TensorSpec("g", "F32", (1500,))
    chunks = list(codec.encode_tensor(spec, memoryview(data), None))
    rng = np.random.default_rng(7)
    errors = 0
    for trial in range(100):
        mutated = [modelcodecs.EncodedChunk(c.coder, bytearray(c.payload), dict(c.meta)) for c in chunks]
        victim = mutated[rng.integers(len(mutated))]
        kind = trial % 4
        if kind == 0 and victim.payload:
            victim.payload[rng.integers(len(victim.payload))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            victim.payload = victim.payload[:int(rng.integers(len(victim.payload) + 1))]
        elif kind == 2:
            victim.meta["raw"] = [int(rng.integers(-1, 6))]
        else:
            victim.meta["n"] = int(victim.meta["n"] + rng.integers(-3, 4))
        for c in mutated:
            c.payload = bytes(c.payload)
        out = bytearray(spec.nbytes)
        try:
            codec.decode_tensor(spec, mutated, None, memoryview(out))
        except ModelCodecError:
            errors += 1
            continue
        assert bytes(out) == data
    assert errors > 80


def test_packed_buffers_survive_fuzzing_with_an_error_or_the_exact_bytes():
    codec = modelcodecs.get_codec({"id": "lmgc", "window_elements": 256})
    raw = gradients(600).tobytes()
    encoded = codec.encode(raw, dtype="F32")
    rng = np.random.default_rng(3)
    for _ in range(100):
        bad = bytearray(encoded)
        for _ in range(int(rng.integers(1, 4))):
            bad[rng.integers(len(bad))] = int(rng.integers(256))
        try:
            assert codec.decode(bytes(bad)) == raw
        except ModelCodecError:
            pass


# -- the artifact: another process, another thread count, another prior ---------------------------------------

DECODE_SCRIPT = """
import hashlib, json, sys, modelcodecs
from pathlib import Path
artifact, out = sys.argv[1], Path(sys.argv[2])
hashes = {}
for threads in (1, 2):
    modelcodecs.decompress_model(artifact, out / str(threads), threads=threads)
    hashes[threads] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / str(threads)).iterdir())}
print(json.dumps(hashes))
"""


@pytest.mark.parametrize("prior", ["builtin", "lm"])
def test_artifact_decodes_in_another_process_with_one_and_two_threads(prior, lm_prior, tmp_path):
    # the tiny LM codes about 200 tokens a second on a shared CPU: its folder is small
    grads = write_gradient_folder(tmp_path / "grads", **({} if prior == "builtin" else {"steps": 2, "channels": 1}))
    config = {"id": "lmgc", "window_elements": 256} if prior == "builtin" else \
        {"id": "lmgc", "prior": str(lm_prior), "window_tokens": 48}
    artifact = tmp_path / "g.dvz"
    modelcodecs.compress_model(grads, artifact, codec=config, threads=2)
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(grads.iterdir())}
    index = modelcodecs.inspect_artifact(artifact)
    coders = {t["name"]: t["coders"] for t in index["tensor_list"]}
    assert coders["step_count"] == ["fallback"] and coders["conv.weight"] == ["lmgc"]
    result = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, str(artifact), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"1": expected, "2": expected}
    if prior == "builtin":
        assert modelcodecs.verify_artifact(artifact, reference_dir=grads).ok


def test_decoding_with_another_prior_is_refused_by_name(lm_prior, tmp_path):
    other = tiny_lm_prior(tmp_path / "other-llama", seed=1)
    grads = write_gradient_folder(tmp_path / "grads", steps=1, channels=1)
    artifact = tmp_path / "g.dvz"
    modelcodecs.compress_model(grads, artifact, codec={"id": "lmgc", "prior": str(lm_prior), "window_tokens": 64})
    with pytest.raises(WrongPriorError, match="hf:tiny-llama"):
        modelcodecs.verify_artifact(artifact, prior=other)
    builtin = tmp_path / "b.dvz"
    modelcodecs.compress_model(grads, builtin, codec="lmgc")
    with pytest.raises(WrongPriorError, match="builtin"):
        modelcodecs.decompress_model(builtin, tmp_path / "out", prior=lm_prior)
    assert not (tmp_path / "out").exists()
    # the prior found where it is now, under another name: same fingerprint, decodes
    moved = tmp_path / "moved"
    (moved / "tiny-llama").mkdir(parents=True)
    for path in lm_prior.iterdir():
        (moved / "tiny-llama" / path.name).write_bytes(path.read_bytes())
    assert modelcodecs.verify_artifact(artifact, prior=moved / "tiny-llama").ok


# -- the LM prior -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"separator": "space"}, {"separator": "comma+space", "bytes_per_group": 2},
                                     {"serialisation": "iso"}, {"renormalise": False, "bytes_per_group": 8}],
                         ids=json.dumps)
def test_lm_prior_round_trips_every_serialisation(options, lm_prior):
    codec = modelcodecs.get_codec({"id": "lmgc", "prior": str(lm_prior), "window_tokens": 40, **options})
    data = gradients(24).tobytes()
    chunks = roundtrip(codec, TensorSpec("g", "F32", (4, 6)), data, threads=2)
    assert len(chunks) > 1 and all(0 < c.meta["tokens"] < 40 for c in chunks)
    assert {c.meta["prior"] for c in chunks} == {codec.load_prior().fingerprint}
    roundtrip(codec, TensorSpec("h", "F16", (7,)), gradients(7, np.float16).tobytes())


def test_renormalising_over_legal_tokens_saves_bits(lm_prior):
    data = gradients(16).tobytes()
    spec = TensorSpec("g", "F32", (16,))
    sizes = {}
    for renormalise in (True, False):
        codec = modelcodecs.get_codec({"id": "lmgc", "prior": str(lm_prior), "renormalise": renormalise})
        chunks = roundtrip(codec, spec, data)
        sizes[renormalise] = sum(c.meta["ideal_bits"] for c in chunks)
        assert all(c.meta["renorm"] is renormalise for c in chunks)
    assert sizes[True] < sizes[False]


def test_a_tokenizer_that_cannot_write_the_serialisation_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path / "hex-only"
    vocab = {"<unk>": 0, "<s>": 1, **{c: i + 2 for i, c in enumerate("0123456789abcdef")}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", unk_token="<unk>").save_pretrained(folder)
    LlamaForCausalLM(LlamaConfig(vocab_size=18, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    with pytest.raises(ConfigError, match="cannot encode"):
        modelcodecs.get_codec({"id": "lmgc", "prior": str(folder), "serialisation": "iso"}).load_prior()


def test_a_prior_folder_that_is_not_a_causal_lm_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError):
        modelcodecs.get_codec({"id": "lmgc", "prior": str(tmp_path / "empty")}).load_prior()
    with pytest.raises(ConfigError):
        modelcodecs.get_codec({"id": "lmgc", "prior": str(tmp_path / "missing")}).load_prior()


# -- the recorder in a real training loop -----------------------------------------------------------------------

def test_recorder_writes_real_gradients_every_n_steps_and_they_round_trip(tmp_path):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    recorder = GradientRecorder(model, tmp_path / "grads", every=2)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for step in range(5):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        recorder.record(step)
        optimiser.step()
        optimiser.zero_grad()
    assert sorted(p.name for p in (tmp_path / "grads").iterdir()) == [f"step_{s:08d}.safetensors" for s in (0, 2, 4)]
    assert recorder.cost.steps_recorded == 3 and recorder.cost.bytes_written > 0
    info = gradient_set_info(tmp_path / "grads")
    assert info["steps"] == [0, 2, 4] and info["tensors"] == 12 and info["dtypes"] == {"F32": 12}
    assert info["floats"] == 3 * (8 * 16 + 16 + 16 * 3 + 3) and info["non_float_tensors"] == []
    from safetensors.torch import load_file
    first = load_file(str(tmp_path / "grads" / "step_00000000.safetensors"))
    assert first["0.weight"].abs().sum() > 0  # real, non-zero gradients
    modelcodecs.compress_model(tmp_path / "grads", tmp_path / "g.dvz", codec="lmgc")
    modelcodecs.decompress_model(tmp_path / "g.dvz", tmp_path / "back")
    for path in (tmp_path / "grads").iterdir():
        assert (tmp_path / "back" / path.name).read_bytes() == path.read_bytes()
    with pytest.raises(ConfigError):
        GradientRecorder(model, tmp_path / "x", every=0)


# -- the gradient bench ------------------------------------------------------------------------------------------

def test_gradient_bench_reports_every_coder_exact_and_whole_set_runs_per_thread_count(tmp_path):
    from modelcodecs.lmgc import bench

    grads = write_gradient_folder(tmp_path / "grads", steps=2)
    assert bench.main(["--gradients", str(grads), "--memory", "--threads", "1", "2", "--json",
                       str(tmp_path / "report.json")]) == 0
    entry = json.loads((tmp_path / "report.json").read_text())[str(grads)]
    rows = entry["all"]
    assert "lmgc (builtin prior)" in rows and "zstd-19" in rows and all(row["exact"] for row in rows.values())
    floats = 2 * (2 * 3 * 3 * 16 + 10)
    assert {row["floats"] for row in rows.values()} == {floats}
    assert 0.9 < rows["lmgc (builtin prior)"]["ideal_vs_real"] <= 1.0  # flushes weigh on a few hundred floats
    for count in (1, 2):
        for step in ("compress", "decompress"):
            run = entry["memory"][f"threads_{count}"][step]
            assert run["peak_rss_bytes"] > 0 and run["cpu_seconds"] > 0 and len(run["load_average"]) == 2
    assert not (tmp_path / "grads.bench-work" / "g.dvz").exists()
