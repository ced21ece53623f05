"""Build the tiny causal LM prior that the LM-GC backwards-compatibility fixture was coded with, once:

    python tests/codecs/build_lmgc_prior_fixture.py

It writes ``fixture/lmgc/hf-prior/tiny-llama/`` (a Llama of one layer, hidden size 16, from a config; a byte-level
BPE tokenizer with 16 merges trained on hex text; weights in float16: about 50 KB) unless it exists.
``test_backwards_compat.py`` codes its payloads with it; like every fixture, it is committed and never rebuilt
(a rebuilt prior would have another fingerprint, and the committed payloads would be refused by name).
"""

from __future__ import annotations

from pathlib import Path

from lmgc_priors import tiny_lm_prior

PRIOR = Path(__file__).parent / "fixture" / "lmgc" / "hf-prior" / "tiny-llama"


def build(folder: Path = PRIOR) -> Path:
    return tiny_lm_prior(folder, seed=20261202, hidden=16, layers=1, vocab_merges=16, dtype="float16")


if __name__ == "__main__":
    print(build())
