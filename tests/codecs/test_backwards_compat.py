"""Artifacts written by earlier versions must always decode.

The first run writes fixtures under ``tests/codecs/fixture/`` (inputs, their encodings and a whole ``.dvz``
artifact); they are committed and NEVER regenerated. Later runs decode the stored encodings and compare with the
stored inputs byte for byte. If a wire format has to change, add a new codec id or container format version and
keep decoding the old one; do not rewrite these files.
"""

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

import modelcodecs
from modelcodecs.abc import TensorSpec
from modelcodecs.container import pack_chunks, unpack_chunks
from modelcodecs.errors import CorruptArtifactError

FIXTURE = Path(__file__).parent / "fixture"
CODECS = [{"id": "fmdelta"}, {"id": "zstd"}, {"id": "xor-zstd"}, {"id": "fmdelta-nobase"},
          {"id": "lmgc", "window_elements": 256},
          {"id": "lmgc", "serialisation": "iso", "separator": "comma", "bytes_per_group": 2}]
BASE_CODECS = [{"id": "fmdelta", "chunk_elements": 4096}, {"id": "xor-zstd", "chunk_bytes": 4096}]


def _bits(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":  # bf16 = the high half of fp32 (truncation keeps special values special)
        return (values.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()
    numpy_dtype = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64,
                   "BOOL": np.bool_, "U8": np.uint8}[dtype]
    return values.astype(numpy_dtype).tobytes()


def _inputs() -> list[tuple[TensorSpec, bytes, bytes]]:
    """(spec, fine-tuned bytes, base bytes) for every fixture input; deterministic."""
    rng = np.random.default_rng(20261123)
    cases = []
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 5e-324, 65504.0, 1.0])
    for dtype, shape in [("F16", (33, 17)), ("BF16", (64, 40)), ("F32", (3, 5, 7, 11)), ("F64", (500,)),
                         ("I64", (300,)), ("I32", (4, 50)), ("BOOL", (257,)), ("U8", (1000,))]:
        n = int(np.prod(shape))
        if dtype in ("I64", "I32", "U8"):
            base = rng.integers(0, 200, n)
            tuned = base + (rng.random(n) < 0.1)
        elif dtype == "BOOL":
            base = rng.random(n) < 0.5
            tuned = base ^ (rng.random(n) < 0.05)
        else:
            base = rng.standard_t(6, n) * 0.02
            tuned = base + rng.normal(0, 1e-3, n)
            tuned[:len(specials)] = specials
            if dtype == "F64":  # a NaN with a payload of its own
                tuned_bits = tuned.view(np.uint64)
                tuned_bits[len(specials)] = np.uint64(0x7FF0000000000ABC)
        cases.append((TensorSpec(f"t{len(cases)}", dtype, shape), _bits(tuned, dtype), _bits(base, dtype)))
    return cases


def _folder(config: dict) -> Path:
    return FIXTURE / config["id"] / ("codec." + hashlib.sha256(json.dumps(config, sort_keys=True).encode())
                                     .hexdigest()[:8])


def _write_once(path: Path, data: bytes) -> bytes:
    """Write ``data`` if the fixture is missing; return what the fixture holds."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path.read_bytes()


@pytest.mark.parametrize("config", CODECS, ids=lambda c: c["id"])
def test_buffer_encodings_of_earlier_versions_decode(config):
    codec = modelcodecs.get_codec(config)
    folder = _folder(config)
    _write_once(folder / "config.json", json.dumps(config, sort_keys=True).encode())
    for i, (spec, tuned, _) in enumerate(_inputs()):
        stored_input = _write_once(folder / f"array.{i:02d}.bin", tuned)
        stored = _write_once(folder / f"encoded.{i:02d}.dat", codec.encode(tuned, dtype=spec.dtype))
        assert codec.decode(stored) == stored_input
        assert codec.decode(codec.encode(stored_input, dtype=spec.dtype)) == stored_input


@pytest.mark.parametrize("config", BASE_CODECS, ids=lambda c: c["id"])
def test_base_conditioned_encodings_of_earlier_versions_decode(config):
    codec = modelcodecs.get_codec(config)
    folder = _folder(config) / "with-base"
    for i, (spec, tuned, base) in enumerate(_inputs()):
        stored_base = _write_once(folder / f"base.{i:02d}.bin", base)
        stored_input = _write_once(folder / f"array.{i:02d}.bin", tuned)
        encoded = pack_chunks(spec, list(codec.encode_tensor(spec, memoryview(tuned), memoryview(base))))
        stored_spec, chunks = unpack_chunks(_write_once(folder / f"encoded.{i:02d}.dat", encoded))
        spec = TensorSpec(spec.name, stored_spec.dtype, stored_spec.shape)
        out = bytearray(spec.nbytes)
        codec.decode_tensor(spec, chunks, memoryview(stored_base), memoryview(out))
        assert bytes(out) == stored_input


def _grow_rows(spec: TensorSpec, data: bytes, rows: int) -> tuple[TensorSpec, bytes]:
    """The tensor with ``rows`` more leading-dimension rows (deterministic bytes), or fewer when negative."""
    row = len(data) // spec.shape[0]
    extra = np.random.default_rng(abs(rows)).integers(0, 256, row * max(rows, 0), dtype=np.uint8).tobytes()
    return TensorSpec(spec.name, spec.dtype, (spec.shape[0] + rows, *spec.shape[1:])), (data + extra)[
        :row * (spec.shape[0] + rows)]


def _write_pair(root: Path, rows: bool = False) -> None:
    """A tiny base/fine-tuned pair of safetensors folders, written with the format spelled out by hand; with
    ``rows``, the fine-tune's first tensor has 3 rows more than its base and its second 4 rows fewer."""
    for side in ("base", "finetuned"):
        tensors = {spec.name: (spec, tuned if side == "finetuned" else base) for spec, tuned, base in _inputs()}
        if rows and side == "finetuned":
            for name, grow in (("t0", 3), ("t1", -4)):
                tensors[name] = _grow_rows(*tensors[name], grow)
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, (spec, data) in tensors.items():
            header[name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [offset,
                                                                                            offset + len(data)]}
            offset += len(data)
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        folder = root / side
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob
                                                   + b"".join(data for _, data in tensors.values()))
        (folder / "config.json").write_text(json.dumps({"model_type": "fixture", "architectures": ["Fixture"]}))


@pytest.mark.parametrize("codec_id,version", [(c, v) for v in (1, 2) for c in ("fmdelta", "zstd", "xor-zstd",
                                                                                "fmdelta-nobase")]
                         + [("lmgc", 2)])
def test_dvz_artifacts_of_earlier_versions_restore_byte_for_byte(codec_id, version, tmp_path):
    root = FIXTURE / "dvz" / f"format.{version:02d}"
    if not (root / "finetuned").exists():
        _write_pair(root)
    artifact = root / f"{codec_id}.dvz"
    if not artifact.exists():
        modelcodecs.compress_model(root / "finetuned", artifact, codec=codec_id, base_dir=root / "base", threads=1)
    assert modelcodecs.inspect_artifact(artifact)["format_version"] == version
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=root / "base", threads=1)
    for name in ("model.safetensors", "config.json"):
        assert (out / name).read_bytes() == (root / "finetuned" / name).read_bytes()


def test_dvz_format_2_shared_rows_restore_byte_for_byte(tmp_path):
    """Format 2's tensors coded against the leading rows of a base tensor of another first dimension."""
    root = FIXTURE / "dvz" / "format.02-rows"
    if not (root / "finetuned").exists():
        _write_pair(root, rows=True)
    artifact = root / "fmdelta.dvz"
    if not artifact.exists():
        modelcodecs.compress_model(root / "finetuned", artifact, codec={"id": "fmdelta", "chunk_elements": 4096},
                                   base_dir=root / "base", threads=1)
    info = modelcodecs.inspect_artifact(artifact)
    assert info["format_version"] == 2
    by_name = {t["name"]: t for t in info["tensor_list"]}
    assert by_name["t0"]["shape"] == [36, 17] and by_name["t0"]["base"] == "t0"
    assert by_name["t1"]["shape"] == [60, 40] and by_name["t1"]["base"] == "t1"
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=root / "base", threads=1)
    for name in ("model.safetensors", "config.json"):
        assert (out / name).read_bytes() == (root / "finetuned" / name).read_bytes()


# BitDelta: whole artifacts of tiny model pairs (its plan of which tensors to binarise comes from the model's
# structure), decoded and compared with the restored bytes recorded when the fixture was written.
BITDELTA_CASES = [("gpt2-f32-matrix", "gpt2", "F32", {"id": "bitdelta", "steps": 0}),
                  ("llama-bf16-row", "llama", "BF16", {"id": "bitdelta", "steps": 0, "scale_granularity": "row"})]


def _write_bitdelta_pair(root: Path, family: str, dtype: str) -> None:
    import torch
    import transformers

    torch.manual_seed(7)
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    else:
        config = transformers.LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1)
    model = transformers.AutoModelForCausalLM.from_config(config).to(getattr(torch, {"F32": "float32",
                                                                                      "BF16": "bfloat16"}[dtype]))
    model.save_pretrained(root / "base")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    model.save_pretrained(root / "finetuned")


@pytest.mark.parametrize("name,family,dtype,config", BITDELTA_CASES, ids=[c[0] for c in BITDELTA_CASES])
def test_bitdelta_artifacts_of_earlier_versions_restore_the_same_bytes(name, family, dtype, config, tmp_path):
    root = FIXTURE / "bitdelta" / name
    artifact = root / "bitdelta.dvz"
    if not artifact.exists():
        _write_bitdelta_pair(root, family, dtype)
        modelcodecs.compress_model(root / "finetuned", artifact, codec=config, base_dir=root / "base", threads=1)
        modelcodecs.decompress_model(artifact, tmp_path / "first", base_dir=root / "base", threads=1)
        (root / "restored.sha256").write_text(hashlib.sha256((tmp_path / "first" / "model.safetensors")
                                                             .read_bytes()).hexdigest())
    out = tmp_path / "restored"
    modelcodecs.decompress_model(artifact, out, base_dir=root / "base", threads=1)
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() == \
        (root / "restored.sha256").read_text()
    assert (out / "config.json").read_bytes() == (root / "finetuned" / "config.json").read_bytes()
    assert "signs" in {c for t in modelcodecs.inspect_artifact(artifact)["tensor_list"] for c in t["coders"]}
# Lossy codecs: their decoded values are part of the wire format too, so the first run stores the decoded bytes
# beside the encoding and later runs must decode the stored encoding to exactly those bytes.
LOSSY_CODECS = [{"id": "hyper", "n": 63, "M": 3, "auto_l": True, "chunk_elements": 4096},
                {"id": "hyper", "l": 0.05, "n": 100, "M": 2, "trajectory": "winding", "on_delta": True},
                {"id": "rtn", "bits": 3, "granularity": "group", "group_size": 32},
                {"id": "rtn", "bits": 6, "on_delta": True, "chunk_elements": 4096}]


def _lossy_inputs() -> list[tuple[TensorSpec, bytes, bytes]]:
    """The shared inputs (their floats hold NaN/Inf: stored raw) plus finite >= 2-D float tensors."""
    rng = np.random.default_rng(20261202)
    cases = _inputs()
    for dtype, shape in [("F32", (96, 64)), ("BF16", (40, 33)), ("F16", (16, 64)), ("F64", (9, 7))]:
        base = rng.standard_t(6, int(np.prod(shape))) * 0.02
        tuned = base + rng.normal(0, 1e-3, base.size)
        cases.append((TensorSpec(f"t{len(cases)}", dtype, shape), _bits(tuned, dtype), _bits(base, dtype)))
    return cases


@pytest.mark.parametrize("config", LOSSY_CODECS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_lossy_encodings_of_earlier_versions_decode_to_the_same_values(config):
    codec = modelcodecs.get_codec(config)
    folder = _folder(config)
    _write_once(folder / "config.json", json.dumps(config, sort_keys=True).encode())
    for i, (spec, tuned, base) in enumerate(_lossy_inputs()):
        given = memoryview(base) if codec.needs_base else None
        stored_base = _write_once(folder / f"base.{i:02d}.bin", base)
        encoded = pack_chunks(spec, list(codec.encode_tensor(spec, memoryview(tuned), given)))
        stored_spec, chunks = unpack_chunks(_write_once(folder / f"encoded.{i:02d}.dat", encoded))
        out = bytearray(stored_spec.nbytes)
        codec.decode_tensor(stored_spec, chunks, memoryview(stored_base) if codec.needs_base else None,
                            memoryview(out))
        assert bytes(out) == _write_once(folder / f"decoded.{i:02d}.bin", bytes(out))


# LM-GC with a Hugging Face causal LM prior: a tiny prior committed beside the payloads it coded
# (build_lmgc_prior_fixture.py built it once). The codec's config names the prior's folder, which moves with the
# checkout, so this fixture's folder has a fixed name and config.json records the options without the path.
LM_PRIOR_OPTIONS = {"id": "lmgc", "window_tokens": 48, "separator": "space", "bytes_per_group": 2}


def _lm_prior_inputs() -> list[tuple[TensorSpec, bytes]]:
    """Gradient-like floats with the special values, small enough for the tiny LM's few hundred tokens a second."""
    rng = np.random.default_rng(20261202)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40])
    cases = []
    for dtype, n in [("F32", 24), ("BF16", 20)]:
        values = rng.standard_t(4, n) * 1e-3
        values[:len(specials)] = specials
        cases.append((TensorSpec(f"g{len(cases)}", dtype, (n,)), _bits(values, dtype)))
    return cases


class _RecordingCoder:
    """Stands in for the range coder: takes the given tokens and hashes every frequency row the prior quantised."""

    decoding = False

    def __init__(self):
        self.digest = hashlib.sha256()

    def one(self, freq, symbol):
        self.digest.update(np.ascontiguousarray(freq).tobytes())
        return symbol


def _prior_probe(codec) -> str:
    prior = codec.load_prior()
    tokens = prior.tokenize("3f80 bf80 0000 7fc0 3a83 126f " * 4)
    coder = _RecordingCoder()
    prior.code_window(coder, tokens, len(tokens), None)
    return coder.digest.hexdigest()


def test_lm_prior_encodings_of_earlier_versions_decode_and_another_prior_is_refused_by_name(tmp_path):
    pytest.importorskip("transformers")
    from build_lmgc_prior_fixture import build
    from lmgc_priors import tiny_lm_prior

    from modelcodecs.errors import WrongPriorError

    prior = build()  # returns the committed folder; builds it only where it is missing
    folder = prior.parent
    assert json.loads(_write_once(folder / "config.json", json.dumps(LM_PRIOR_OPTIONS, sort_keys=True).encode())) \
        == LM_PRIOR_OPTIONS
    codec = modelcodecs.get_codec({**LM_PRIOR_OPTIONS, "prior": str(prior)})
    # An LM prior decodes only where the LM's float arithmetic matches the encoder's: a CPU with other kernels may
    # predict differently. The probe (a digest of the quantised predictions on a fixed text) tells which case this
    # machine is; either way a decode gives the original bytes or raises, never other bytes.
    same_predictions = _write_once(folder / "predictions.sha256", _prior_probe(codec).encode()).decode() \
        == _prior_probe(codec)
    stored = []
    for i, (spec, data) in enumerate(_lm_prior_inputs()):
        stored_input = _write_once(folder / f"array.{i:02d}.bin", data)
        encoded = _write_once(folder / f"encoded.{i:02d}.dat", codec.encode(data, dtype=spec.dtype))
        try:
            decoded = codec.decode(encoded)
        except CorruptArtifactError:
            assert not same_predictions, "the predictions match the encoder's, so the payload must decode"
        else:
            assert decoded == stored_input
        stored.append(encoded)
    _, chunks = unpack_chunks(stored[0])
    assert len(chunks) > 1 and {c.meta["prior"] for c in chunks} == {codec.load_prior().fingerprint}
    assert codec.load_prior().fingerprint.startswith("hf:tiny-llama:")
    # another prior (the same recipe, another seed) and the built-in one are refused, naming the recorded prior
    other = modelcodecs.get_codec({**LM_PRIOR_OPTIONS, "prior": str(tiny_lm_prior(
        tmp_path / "tiny-llama", seed=1, hidden=16, layers=1, vocab_merges=16, dtype="float16"))})
    for wrong in (other, modelcodecs.get_codec({key: value for key, value in LM_PRIOR_OPTIONS.items()
                                                if key != "window_tokens"})):
        with pytest.raises(WrongPriorError, match=r"coded with prior 'hf:tiny-llama:[0-9a-f]{16}'"):
            wrong.decode(stored[0])
