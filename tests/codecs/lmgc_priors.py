"""Helpers of the LM-GC tests: gradient-like floats and gradient folders, and a tiny causal LM prior (Llama
architecture from a config, a byte-level BPE tokenizer trained on hex text) built in a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_lm_prior(folder: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2, vocab_merges: int = 64,
                  dtype: str = "float32") -> Path:
    """Build the prior in ``folder`` unless it is there (weights saved in ``dtype``; a prior runs in float32)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (folder / "config.json").exists():
        return folder
    rng = np.random.default_rng(seed)
    samples = [(rng.standard_normal(64) * 1e-3).astype(np.float32).tobytes().hex() for _ in range(50)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + vocab_merges + 1, special_tokens=["<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(samples, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="<s>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    LlamaForCausalLM(config).to(getattr(torch, dtype)).save_pretrained(folder, safe_serialization=True)
    return folder


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 1e-45, 3.4e38, -1.0], dtype=np.float64)


def gradients(n: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.standard_t(4, n) * 1e-3
    values[rng.random(n) < 0.1] = 0.0
    values[:min(n, len(SPECIALS))] = SPECIALS[:n]
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def write_gradient_folder(folder: Path, steps: int = 3, seed: int = 0, channels: int = 16) -> Path:
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    for step in range(steps):
        tensors = {"conv.weight": gradients(2 * 3 * 3 * channels, seed=seed + step).reshape(channels, 2, 3, 3),
                   "fc.bias": gradients(10, seed=seed + 10 + step),
                   "step_count": np.array([step], dtype=np.int64)}
        save_file(tensors, str(folder / f"step_{step:08d}.safetensors"), metadata={"step": str(step)})
    return folder
