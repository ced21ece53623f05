"""Model pairs to test and benchmark codecs on.

* :func:`make_synthetic_pair` -- a base and a fine-tune made of random tensors: base ~ Student-t(6) * 0.02, fine-tune
  = base + N(0, delta_sigma^2) computed in float64 and rounded to the dtype (optionally a share of elements kept
  exactly equal to the base, or bf16/fp16 values stored as fp32). Written tensor by tensor as HF-style folders
  (``model.safetensors`` + ``config.json``); fast and lean enough for 10^8 elements.
* :func:`make_tiny_transformer_pair` -- a tiny causal LM (Llama architecture) with its own tokenizer, pre-trained
  briefly on one generated corpus (the base), then fine-tuned with AdamW on another (a real optimiser's delta).
* :func:`write_text_dataset` -- generated English-ish text.

Importing this module needs only numpy; torch, transformers and tokenizers are imported inside the functions that
use them. Nothing here touches the network.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._torch import offline
from .errors import ConfigError

# numpy dtypes of the float formats we generate (BF16 is handled on uint16 bit patterns).
_NP_FLOAT = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2")}
_ITEM = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_WIDTH_ORDER = {"F16": 1, "BF16": 1, "F32": 2, "F64": 3}
_CHUNK = 1 << 20  # elements generated per step (each step gets its own seeded generator)
BASE_SCALE = 0.02


class SyntheticPair(NamedTuple):
    base: Path
    finetuned: Path
    info: dict


class TinyPair(NamedTuple):
    base: Path
    finetuned: Path
    dataset: Path
    info: dict


# -- float rounding -------------------------------------------------------------------------------------------------

def _f64_to_f32_round_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd (the float32 neighbour with an odd last bit when inexact). Rounding that
    result to nearest-even bf16 equals rounding x to bf16 directly (no double-rounding error)."""
    y = x.astype(np.float32)
    bits = y.view(np.uint32)
    inexact = (y.astype(np.float64) != x) & ((bits & 1) == 0)
    if inexact.any():
        away = np.abs(x[inexact]) > np.abs(y[inexact].astype(np.float64))
        bits[inexact] += np.where(away, 1, -1).astype(np.uint32)  # sign-magnitude: +1 grows the magnitude
    return y


def _f64_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float64 -> bf16 bit patterns (uint16), round to nearest even. Inputs are finite."""
    u = _f64_to_f32_round_odd(x).view(np.uint32)
    u = u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    return (u >> np.uint32(16)).astype(np.uint16)


def _bf16_bits_to_f64(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)


def _round(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype``; returns the dtype's array (uint16 bit patterns for BF16)."""
    if dtype == "BF16":
        return _f64_to_bf16_bits(x)
    return x.astype(_NP_FLOAT[dtype])


def _widen(values: np.ndarray, dtype: str) -> np.ndarray:
    return _bf16_bits_to_f64(values) if dtype == "BF16" else values.astype(np.float64)


def _store(values: np.ndarray, dtype: str, stored_as: str) -> np.ndarray:
    """Values of ``dtype`` as the little-endian array written to disk as ``stored_as`` (exact widening)."""
    if stored_as == dtype:
        return values
    if dtype == "BF16" and stored_as == "F32":
        return (values.astype(np.uint32) << np.uint32(16)).view("<f4")
    return _widen(values, dtype).astype(_NP_FLOAT[stored_as])


# -- safetensors writing --------------------------------------------------------------------------------------------

def _safetensors_header(tensors: list[tuple[str, str, tuple[int, ...]]], metadata: dict | None = None) -> bytes:
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, dtype, shape in tensors:
        size = math.prod(shape) * _ITEM[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _tensor_shapes(n_elements: int, n_tensors: int) -> list[tuple[int, ...]]:
    sizes = [n_elements // n_tensors + (1 if i < n_elements % n_tensors else 0) for i in range(n_tensors)]
    shapes = []
    for size in sizes:
        cols = next((c for c in (1024, 512, 256, 128, 64) if size % c == 0 and size >= 4 * c), None)
        shapes.append((size // cols, cols) if cols else (size,))
    return shapes


def smollm2_layout(layers: int = 30, vocab: int = 49152) -> list[tuple[str, tuple[int, ...]]]:
    """The tensor names and shapes of SmolLM2-135M (272 tensors, 134.5 M parameters, the embedding tied to the
    output): a real checkpoint's many small tensors, without downloading or fine-tuning the model. Fewer
    ``layers`` or a smaller ``vocab`` make a miniature of it."""
    hidden, mlp, kv = 576, 1536, 192
    layout = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        layout += [(p + "input_layernorm.weight", (hidden,)), (p + "mlp.down_proj.weight", (hidden, mlp)),
                   (p + "mlp.gate_proj.weight", (mlp, hidden)), (p + "mlp.up_proj.weight", (mlp, hidden)),
                   (p + "post_attention_layernorm.weight", (hidden,)),
                   (p + "self_attn.k_proj.weight", (kv, hidden)), (p + "self_attn.o_proj.weight", (hidden, hidden)),
                   (p + "self_attn.q_proj.weight", (hidden, hidden)), (p + "self_attn.v_proj.weight", (kv, hidden))]
    return layout + [("model.norm.weight", (hidden,))]


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _prepare_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise ConfigError(f"output folder {path} is not empty")
    return path


# -- synthetic pairs ------------------------------------------------------------------------------------------------

def make_synthetic_pair(out_dir: str | os.PathLike, *, dtype: str = "F32", n_elements: int = 1 << 20,
                        delta_sigma: float = 1e-4, unchanged_fraction: float = 0.0, n_tensors: int | None = None,
                        seed: int = 0, stored_as: str | None = None, threads: int = 2,
                        layout: list[tuple[str, tuple[int, ...]]] | None = None) -> SyntheticPair:
    """Write ``out_dir/base`` and ``out_dir/finetuned`` (each ``model.safetensors`` + ``config.json``).

    base = Student-t(6) * 0.02 rounded to ``dtype``; fine-tune = base + N(0, delta_sigma^2) computed in float64 and
    rounded to ``dtype`` (round to nearest even). Exactly ``round(unchanged_fraction * n_elements)`` elements are
    forced equal to the base (others may also round back to the base when delta_sigma is far below the dtype's
    spacing). ``stored_as`` (e.g. ``"F32"`` for ``dtype="BF16"``) writes the same values in a wider float format,
    so their low mantissa bits are zero. ``n_tensors`` defaults to one tensor per 4 Mi elements. ``layout`` (tensor
    names and shapes, e.g. :func:`smollm2_layout`) replaces ``n_elements`` and ``n_tensors``. Deterministic for
    a seed (independent of ``threads``). Returns ``(base, finetuned, info)``; ``info["unchanged_forced"]`` counts
    the forced elements and ``info["equal"]`` all elements whose stored bits equal the base's.
    """
    if dtype not in _ITEM:
        raise ConfigError(f"dtype must be one of {sorted(_ITEM)}, got {dtype!r}")
    stored_as = stored_as or dtype
    if stored_as not in _ITEM or stored_as == "BF16" and dtype != "BF16" or \
            _WIDTH_ORDER[stored_as] < _WIDTH_ORDER[dtype] or (stored_as == "F16" and dtype != "F16"):
        raise ConfigError(f"cannot store {dtype} values as {stored_as}")
    if layout is not None:
        n_elements, n_tensors = sum(math.prod(shape) for _, shape in layout), len(layout)
    if isinstance(n_elements, bool) or not isinstance(n_elements, int) or n_elements < 1:
        raise ConfigError(f"n_elements must be a positive int, got {n_elements!r}")
    if not (isinstance(delta_sigma, (int, float)) and math.isfinite(delta_sigma) and delta_sigma >= 0):
        raise ConfigError(f"delta_sigma must be a finite number >= 0, got {delta_sigma!r}")
    if not (0.0 <= unchanged_fraction <= 1.0):
        raise ConfigError(f"unchanged_fraction must be in [0, 1], got {unchanged_fraction!r}")
    if n_tensors is None:
        n_tensors = max(1, math.ceil(n_elements / (4 << 20)))
    if not isinstance(n_tensors, int) or not 1 <= n_tensors <= n_elements:
        raise ConfigError(f"n_tensors must be between 1 and n_elements, got {n_tensors!r}")

    root = Path(out_dir)
    base_dir, ft_dir = _prepare_dir(root / "base"), _prepare_dir(root / "finetuned")
    if layout is None:
        shapes = _tensor_shapes(n_elements, n_tensors)
        names = [f"layers.{i}.weight" for i in range(n_tensors)]
    else:
        names, shapes = [name for name, _ in layout], [tuple(shape) for _, shape in layout]
    header = _safetensors_header([(n, stored_as, s) for n, s in zip(names, shapes)], {"format": "pt"})

    # global chunk plan: (tensor index, global start, count); each chunk has its own generator, so the output does
    # not depend on the number of threads
    plan = []
    start = 0
    for t, shape in enumerate(shapes):
        size = math.prod(shape)
        for a in range(0, size, _CHUNK):
            plan.append((t, start + a, min(_CHUNK, size - a)))
        start += size

    def target(x: int) -> int:
        return int(round(unchanged_fraction * x))

    def job(step: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, int, int]:
        t, gstart, count = step
        rng = np.random.default_rng([seed, t, gstart])
        z = rng.standard_normal(count, dtype=np.float32)
        g = rng.standard_gamma(3.0, count, dtype=np.float32)  # chi2(6) / 2
        base64 = (z / np.sqrt(g * np.float32(1.0 / 3.0))).astype(np.float64) * BASE_SCALE  # t(6) * 0.02
        base_vals = _round(base64, dtype)
        noise = rng.standard_normal(count, dtype=np.float32).astype(np.float64) * delta_sigma
        ft_vals = _round(_widen(base_vals, dtype) + noise, dtype)
        k = target(gstart + count) - target(gstart)
        if k:
            if k == count:
                keep = np.ones(count, dtype=bool)
            else:
                keep = rng.integers(0, 1 << 16, count, dtype=np.uint32) < int(unchanged_fraction * 65536)
                diff = int(keep.sum()) - k
                if diff:  # fix the Bernoulli draw up to exactly k elements (still a uniform k-subset)
                    pool = np.flatnonzero(keep if diff > 0 else ~keep)
                    keep[pool[rng.choice(pool.size, abs(diff), replace=False)]] = diff < 0
            ft_vals[keep] = base_vals[keep]
        base_out = _store(base_vals, dtype, stored_as)
        ft_out = _store(ft_vals, dtype, stored_as)
        uint = f"<u{_ITEM[stored_as]}"
        equal = int(np.count_nonzero(base_out.view(uint) == ft_out.view(uint)))
        return base_out, ft_out, k, equal

    forced = equal = 0
    with open(base_dir / "model.safetensors", "wb") as fb, open(ft_dir / "model.safetensors", "wb") as ff:
        fb.write(header)
        ff.write(header)
        for base_out, ft_out, k, eq in _ordered(job, plan, max(1, int(threads))):
            fb.write(memoryview(np.ascontiguousarray(base_out)).cast("B"))
            ff.write(memoryview(np.ascontiguousarray(ft_out)).cast("B"))
            forced += k
            equal += eq
    info = {"dtype": dtype, "stored_as": stored_as, "n_elements": n_elements, "n_tensors": n_tensors,
            "shapes": [list(s) for s in shapes], "delta_sigma": delta_sigma,
            "unchanged_fraction": unchanged_fraction, "unchanged_forced": forced, "equal": equal, "seed": seed}
    for folder, role in ((base_dir, "base"), (ft_dir, "finetuned")):
        _write_config(folder, {"architectures": ["SyntheticModel"], "model_type": "synthetic",
                               "torch_dtype": {"F32": "float32", "F64": "float64", "F16": "float16",
                                               "BF16": "bfloat16"}[stored_as],
                               "deltavault_synthetic": {**{k: v for k, v in info.items() if k != "shapes"},
                                                        "role": role}})
    return SyntheticPair(base_dir, ft_dir, info)


def _ordered(fn: Callable, items: list, threads: int) -> Iterator:
    """``map(fn, items)`` on ``threads`` threads, in order, with at most 2*threads results in flight."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * threads:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


# -- generated text -------------------------------------------------------------------------------------------------

_WORDS = {
    "general": {
        "subj": ["the farmer", "a child", "the old captain", "my neighbour", "the teacher", "a traveller",
                 "the baker", "her brother", "the river", "a small dog", "the village", "our friend"],
        "verb": ["walked to", "looked at", "carried", "found", "painted", "remembered", "followed", "built",
                 "crossed", "watched", "opened", "sold"],
        "obj": ["the bridge", "a red door", "the market", "an old boat", "the green hill", "a heavy basket",
                "the quiet road", "a wooden chair", "the long field", "the bright window", "a letter",
                "the stone wall"],
        "tail": ["in the morning", "after the rain", "before dinner", "without a word", "near the harbour",
                 "on a cold day", "with great care", "at the end of summer", "", "", ""],
    },
    "chat": {
        "subj": ["the user", "the assistant", "the server", "the model", "the request", "the database",
                 "the script", "the worker", "the client", "the queue"],
        "verb": ["returns", "compresses", "stores", "validates", "loads", "sends", "retries", "encodes",
                 "decodes", "caches", "restores", "checks"],
        "obj": ["the checkpoint", "a json reply", "the delta", "the tensor", "the artifact", "a new job",
                "the base model", "the token", "a small file", "the progress report", "the hash",
                "the config"],
        "tail": ["quickly", "without errors", "in one pass", "for every layer", "after a restart",
                 "when asked", "twice", "", ""],
    },
}


def _sentence(rng: random.Random, domain: str) -> str:
    w = _WORDS[domain]
    parts = [rng.choice(w["subj"]), rng.choice(w["verb"]), rng.choice(w["obj"]), rng.choice(w["tail"])]
    if domain == "chat" and rng.random() < 0.3:
        parts = ["question: why", *parts[:3], "? answer:", parts[0], "usually", *parts[1:3]]
    text = " ".join(p for p in parts if p).strip()
    return text[0].upper() + text[1:] + ("" if text.endswith("?") else ".")


def generate_lines(n_lines: int, *, seed: int = 0, domain: str = "general") -> list[str]:
    """``n_lines`` lines of generated English-ish text (1-3 sentences each) from a fixed grammar."""
    if domain not in _WORDS:
        raise ConfigError(f"domain must be one of {sorted(_WORDS)}, got {domain!r}")
    rng = random.Random(f"{domain}-{seed}")
    return [" ".join(_sentence(rng, domain) for _ in range(rng.randint(1, 3))) for _ in range(n_lines)]


def write_text_dataset(path: str | os.PathLike, *, n_lines: int = 200, seed: int = 0,
                       domain: str = "general") -> Path:
    """Write generated English-ish text (one paragraph a line, UTF-8) for perplexity evaluation."""
    if isinstance(n_lines, bool) or not isinstance(n_lines, int) or n_lines < 1:
        raise ConfigError(f"n_lines must be a positive int, got {n_lines!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(generate_lines(n_lines, seed=seed, domain=domain)) + "\n", encoding="utf-8")
    return path


# -- tiny transformer pair ------------------------------------------------------------------------------------------

def _train_tokenizer(lines: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _token_batches(tokenizer, lines: list[str], seq_len: int, batch: int, seed: int):
    import torch

    ids: list[int] = []
    for line in lines:
        ids.extend([tokenizer.bos_token_id, *tokenizer(line)["input_ids"], tokenizer.eos_token_id])
    n_seq = len(ids) // seq_len
    if n_seq < 1:
        raise ConfigError("not enough generated text for one training sequence")
    data = torch.tensor(ids[: n_seq * seq_len]).view(n_seq, seq_len)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n_seq, generator=gen)
        for i in range(0, n_seq - batch + 1 if n_seq >= batch else 1, batch):
            yield data[order[i:i + batch]]


def _train(model, batches, steps: int, lr: float) -> float:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        x = next(batches)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
    model.eval()
    return loss_value


def make_tiny_transformer_pair(out_dir: str | os.PathLike, *, steps: int = 30, dtype: str = "F32", seed: int = 0,
                               n_layer: int = 2, d_model: int = 64, vocab_size: int = 512, base_steps: int = 40,
                               seq_len: int = 64, batch_size: int = 8, lr: float = 3e-3) -> TinyPair:
    """Build a tiny Llama-architecture causal LM pair under ``out_dir`` (``base/``, ``finetuned/``, ``eval.txt``).

    A byte-level BPE tokenizer is trained locally on generated text; the base is pre-trained for ``base_steps``
    AdamW steps on a "general" corpus, then a copy is fine-tuned for ``steps`` AdamW steps on a "chat" corpus.
    Both are saved with ``save_pretrained(safe_serialization=True)`` in ``dtype`` ("F32" or "BF16", trained in
    fp32) with the tokenizer, so ``AutoModelForCausalLM``/``AutoTokenizer.from_pretrained(folder)`` work offline.
    ``eval.txt`` is held-out chat-domain text. Deterministic for a seed on a given machine. Returns
    ``(base, finetuned, dataset, info)``.
    """
    if dtype not in ("F32", "BF16"):
        raise ConfigError(f"dtype must be 'F32' or 'BF16', got {dtype!r}")
    for name, value, low in (("steps", steps, 1), ("n_layer", n_layer, 1), ("d_model", d_model, 8),
                             ("vocab_size", vocab_size, 300), ("base_steps", base_steps, 0),
                             ("seq_len", seq_len, 8), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    if d_model % 16:
        raise ConfigError(f"d_model must be a multiple of 16 (4 heads), got {d_model}")
    offline()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = Path(out_dir)
    base_dir, ft_dir = _prepare_dir(root / "base"), _prepare_dir(root / "finetuned")
    general = generate_lines(600, seed=seed, domain="general")
    chat = generate_lines(600, seed=seed, domain="chat")
    dataset = write_text_dataset(root / "eval.txt", n_lines=120, seed=seed + 1_000_003, domain="chat")
    tokenizer = _train_tokenizer(general + chat, vocab_size)

    torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[dtype]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=n_layer, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=max(128, seq_len), tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, torch_dtype=torch_dtype)
    from transformers.utils import logging as hf_logging

    rng_state, n_threads = torch.random.get_rng_state(), torch.get_num_threads()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars from save_pretrained
    try:
        torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and deterministic across machines
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        base_loss = _train(model, _token_batches(tokenizer, general, seq_len, batch_size, seed), base_steps, lr) \
            if base_steps else float("nan")
        base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ft_loss = _train(model, _token_batches(tokenizer, chat, seq_len, batch_size, seed + 1), steps, lr / 3)
        ft_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

        for folder, state in ((base_dir, base_state), (ft_dir, ft_state)):
            model.load_state_dict(state)
            model.to(torch_dtype).save_pretrained(folder, safe_serialization=True)
            model.to(torch.float32)
            tokenizer.save_pretrained(folder)
    finally:
        torch.random.set_rng_state(rng_state)
        torch.set_num_threads(n_threads)
        if bars:
            hf_logging.enable_progress_bar()
    info = {"dtype": dtype, "steps": steps, "base_steps": base_steps, "n_layer": n_layer, "d_model": d_model,
            "vocab_size": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters()),
            "base_train_loss": base_loss, "finetune_train_loss": ft_loss, "seed": seed}
    return TinyPair(base_dir, ft_dir, dataset, info)


__all__ = ["SyntheticPair", "TinyPair", "generate_lines", "make_synthetic_pair", "smollm2_layout",
           "make_tiny_transformer_pair", "write_text_dataset"]
