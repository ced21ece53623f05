"""LM-GC's priors and the one coding loop per prior that both the encoder and the decoder run.

Determinism is the point of this module. Each prior has a single function that walks a window's symbols and asks a
``coder`` for each one: the encoder's coder codes the known symbol and returns it, the decoder's coder decodes and
returns it. The probabilities are computed by the same code, from the same previous symbols, in the same order, and
turned into integer frequencies by :func:`quantise` (the only place this happens), so both sides hand the range
coder bit-identical tables.

* :class:`BuiltinPrior` (``prior="builtin"``, the default): an adaptive context model over the serialised symbols'
  bytes that needs no weights. Within a window it codes the bytes column by column from the most significant byte
  of each element down; a byte's context is the more significant byte of the same element (the sign and exponent
  for the second column). Counts start flat and are updated after each block of elements (blocks double from 256
  to 8192), so a decoder knows every context of a block before it decodes the block, and symbols that share a
  context are coded as one run. A column whose conditional entropy is within 0.5% of 8 bits is stored raw (one flag
  per column in the chunk's meta). Hex digits and separators are a fixed function of these bytes: in the built-in
  model they cost nothing, so its rate is the same for every serialisation.
* :class:`HFPrior` (``prior=<folder>``): any local Hugging Face causal LM with its tokenizer (the paper's setting).
  The serialised text of a window is tokenised, BOS is prepended, and each token is coded with the model's
  next-token distribution, computed one token at a time with the KV cache by the encoder and the decoder alike
  (a batched pass would round differently). Torch runs one intra-op thread while coding (windows run in parallel
  instead), so the thread count never changes a sum's order.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import constriction
import numpy as np

from ..errors import ConfigError, CorruptArtifactError, ModelFormatError
from .serialise import Serialisation

# Range coder: constriction's queue RangeEncoder (32-bit words, 64-bit state); its categorical models have 24 bits
# of probability precision, so integer frequencies are made on that scale.
PRECISION_BITS = 24
TOTAL = 1 << PRECISION_BITS
BUILTIN_NAME = "builtin:bytecontext-v1"


def quantise(probabilities: np.ndarray, legal: np.ndarray | None = None) -> np.ndarray:
    """Integer frequencies (int64, summing to at most 2^24) for a float probability vector or matrix (rows).

    Every symbol keeps a frequency of at least 1 (the floor), so any symbol stays codable; with ``legal`` (a boolean
    mask) only legal symbols get mass and the floor. The encoder and decoder of every prior call this function on
    bit-identical inputs; it uses float64 arithmetic in a fixed order, so the result is deterministic."""
    p = np.asarray(probabilities, dtype=np.float64)
    if legal is not None:
        p = np.where(legal, p, 0.0)
    total = p.sum(axis=-1, keepdims=True)
    if not np.all(np.isfinite(total)) or np.any(total <= 0):
        raise CorruptArtifactError("the prior gave no usable probabilities (NaN or zero mass)")
    slots = p.shape[-1] if legal is None else int(np.count_nonzero(legal))
    freq = np.floor(p / total * (TOTAL - slots)).astype(np.int64) + 1
    if legal is not None:
        freq = np.where(legal, freq, 0)
    return freq


def code_length_bits(freq: np.ndarray, seen: np.ndarray) -> float:
    """Ideal code length of symbols coded under rows of integer frequencies ``freq``, given how often each symbol
    was coded with each row (``seen``, the same shape; every frequency is at least 1)."""
    return float(np.sum(seen * (np.log2(freq.sum(axis=1))[:, None] - np.log2(freq))))


def _model(freq: np.ndarray):
    return constriction.stream.model.Categorical(freq.astype(np.float64), perfect=False)


class Encoder:
    """The encoder's coder: codes the given symbols, returns them, and adds up their ideal code length."""

    decoding = False

    def __init__(self) -> None:
        self._coder = constriction.stream.queue.RangeEncoder()
        self.ideal_bits = 0.0

    def runs(self, freqs: np.ndarray, symbols: np.ndarray, bounds: list[tuple[int, int]]) -> None:
        """Code ``symbols[s:e]`` (int32) with the frequencies ``freqs[k]`` for the k-th run ``(s, e)``."""
        encode, categorical = self._coder.encode, constriction.stream.model.Categorical
        for row, (s, e) in zip(freqs.astype(np.float64), bounds):
            encode(symbols[s:e], categorical(row, perfect=False))

    def count(self, freqs: np.ndarray, seen: np.ndarray) -> None:
        """Add the ideal code length of the symbols just coded (``seen[k, s]``: how often ``s`` under row k)."""
        self.ideal_bits += code_length_bits(freqs, seen)

    def one(self, freq: np.ndarray, symbol: int) -> int:
        self._coder.encode(int(symbol), _model(freq))
        self.ideal_bits += math.log2(freq.sum() / freq[symbol])
        return int(symbol)

    def payload(self) -> bytes:
        return self._coder.get_compressed().astype("<u4").tobytes()


class Decoder:
    """The decoder's coder: decodes as many symbols as asked for with the same tables."""

    decoding = True

    def __init__(self, payload: bytes, what: str):
        if len(payload) % 4:
            raise CorruptArtifactError(f"{what}: range-coded payload is not a whole number of 32-bit words")
        self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        self.what = what

    def runs(self, freqs: np.ndarray, symbols: np.ndarray, bounds: list[tuple[int, int]]) -> None:
        """Decode into ``symbols[s:e]`` with the frequencies ``freqs[k]`` for the k-th run ``(s, e)``."""
        decode, categorical = self._coder.decode, constriction.stream.model.Categorical
        try:
            for row, (s, e) in zip(freqs.astype(np.float64), bounds):
                symbols[s:e] = decode(categorical(row, perfect=False), e - s)
        except (AssertionError, ValueError, RuntimeError, OverflowError) as exc:
            raise self._corrupt(exc) from None

    def count(self, freqs: np.ndarray, seen: np.ndarray) -> None:
        """Nothing to account for while decoding."""

    def one(self, freq: np.ndarray, _symbol=None) -> int:
        try:
            return int(self._coder.decode(_model(freq)))
        except (AssertionError, ValueError, RuntimeError, OverflowError) as exc:
            raise self._corrupt(exc) from None

    def _corrupt(self, exc: Exception) -> CorruptArtifactError:
        # constriction finds the stream invalid for the tables: a corrupted payload or differing predictions
        return CorruptArtifactError(f"{self.what}: the range decoder failed ({exc}): corrupted payload or a "
                                    f"prediction mismatch")


# -- the built-in adaptive context model -------------------------------------------------------------------------

FIRST_BLOCK, LAST_BLOCK = 256, 8192
# each seen symbol adds this to its count; counts start at 1 (a light prior). A window holds at most 2^22
# elements, so a context's total stays below 2^26: far from int64's limit and from the coder's 2^24 scale, which
# quantise() maps every row onto.
COUNT_STEP = 8
RAW_THRESHOLD = 7.96  # bits per byte: a column that cannot beat this by modelling is stored raw


def _blocks(n: int) -> np.ndarray:
    """Start of each block (blocks double from FIRST_BLOCK to LAST_BLOCK elements), and ``n`` at the end."""
    bounds, start, size = [0], 0, FIRST_BLOCK
    while start + size < n:
        start, size = start + size, min(2 * size, LAST_BLOCK)
        bounds.append(start)
    return np.array(bounds + [n] if n else [0], dtype=np.int64)


# contexts of column 0 (the sign and high exponent bits: none), column 1 (the byte above: 256) and lower columns
# (whether the byte above is zero: exact zeros and tiny values have zero low bytes; other low bytes are noise)
_CONTEXTS = (64, 256, 2)
MAGNITUDE_CONTEXTS = 64


def _context(columns: np.ndarray, j: int, first: np.ndarray | None = None) -> np.ndarray:
    """Context of each element's byte in column ``j`` (int64), from the columns above it only (column 0: the
    given ``first`` contexts, from the row and column magnitudes, or none)."""
    if j == 0:
        return first if first is not None else np.zeros(columns.shape[1], dtype=np.int64)
    if j == 1:
        return columns[0].astype(np.int64)
    return (columns[j - 1] != 0).astype(np.int64)


class BuiltinPrior:
    """The adaptive byte-context model (no weights). Stateless between windows: windows are independent."""

    name = BUILTIN_NAME
    fingerprint = BUILTIN_NAME

    @staticmethod
    def magnitudes(top: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Side information: the mean of (top byte & 0x7f) -- sign dropped, the exponent's high bits -- of each
        row and each column of the window's kept elements, as uint8. A gradient is a sum of outer products, so
        its magnitude is close to a row factor times a column factor."""
        top = (top & 0x7F).astype(np.float64)

        def mean(ids, size):
            count = np.bincount(ids, minlength=size)
            return (np.bincount(ids, weights=top, minlength=size) // np.maximum(count, 1)).astype(np.uint8)

        return mean(rows, n_rows), mean(cols, n_cols)

    @staticmethod
    def magnitude_context(row_mean: np.ndarray, col_mean: np.ndarray, rows: np.ndarray, cols: np.ndarray
                          ) -> np.ndarray:
        """Context of column 0: row mean + column mean, shifted to start at 0 and capped."""
        total = row_mean[rows].astype(np.int64) + col_mean[cols].astype(np.int64)
        if total.size == 0:
            return total
        return np.minimum(total - total.min(), MAGNITUDE_CONTEXTS - 1)

    @staticmethod
    def raw_columns(columns: np.ndarray, first: np.ndarray | None = None) -> list[int]:
        """Columns (most significant first) whose conditional entropy given their context is near 8 bits."""
        raw, n = [], columns.shape[1]
        for j in range(columns.shape[0]):
            ctx = _context(columns, j, first)
            # H(byte | context) = (sum_c N_c log2 N_c - sum_{c,b} N_cb log2 N_cb) / n, over the counts seen
            joint = np.bincount(ctx * 256 + columns[j])
            joint = joint[joint > 0].astype(np.float64)
            per_ctx = np.bincount(ctx).astype(np.float64)
            per_ctx = per_ctx[per_ctx > 0]
            h = (np.sum(per_ctx * np.log2(per_ctx)) - np.sum(joint * np.log2(joint))) / max(n, 1)
            if h >= RAW_THRESHOLD:
                raw.append(j)
        return raw

    @staticmethod
    def code_window(coder, columns: np.ndarray, raw: list[int], first: np.ndarray | None = None) -> np.ndarray:
        """Code (or decode into) ``columns`` (item x n uint8, most significant byte first), skipping ``raw``
        columns; ``first`` is column 0's context per element. The one loop the encoder and the decoder share.

        Within each block, the symbols of a context are coded as one run, contexts in increasing order and
        symbols in element order; a block is coded with the counts of the blocks before it. Every context of a
        column is known before the column is coded (it comes from the columns above), so the runs of all blocks
        are found at once: a stable sort of the elements by (block, context)."""
        item, n = columns.shape
        bounds = _blocks(n)
        block_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        for j in range(item):
            if j in raw:
                continue
            contexts = _CONTEXTS[min(j, 2)]
            ctx = _context(columns, j, first)
            key = block_of * contexts + ctx
            # keys of a default window fit 16 bits, which numpy's stable sort orders by radix (several times faster)
            order = np.argsort(key.astype(np.uint16) if (len(bounds) - 1) * contexts <= 1 << 16 else key,
                               kind="stable")
            key = key[order]
            run_starts = np.flatnonzero(np.diff(key, prepend=-1))
            run_ends = np.append(run_starts[1:], n)
            run_ctx = key[run_starts] % contexts
            run_of = np.repeat(np.arange(len(run_starts)), run_ends - run_starts)  # run of each sorted symbol
            first_run = np.searchsorted(run_starts, bounds)  # runs of block k: first_run[k]..first_run[k + 1]
            # the symbols in coding order: the encoder's, or where the decoder writes them
            symbols = np.empty(n, np.int32) if coder.decoding else columns[j][order].astype(np.int32)
            counts = np.ones((int(ctx.max()) + 1 if n else 0, 256), dtype=np.int64)  # the contexts that occur
            runs = list(zip(run_starts.tolist(), run_ends.tolist()))
            for k in range(len(bounds) - 1):
                r0, r1, a, b = first_run[k], first_run[k + 1], bounds[k], bounds[k + 1]
                present = run_ctx[r0:r1]
                freqs = quantise(counts[present])
                coder.runs(freqs, symbols, runs[r0:r1])
                seen = np.bincount((run_of[a:b] - r0) * 256 + symbols[a:b], minlength=(r1 - r0) * 256
                                   ).reshape(r1 - r0, 256)
                coder.count(freqs, seen)
                counts[present] += COUNT_STEP * seen
            if coder.decoding:
                columns[j][order] = symbols
        return columns


# -- Hugging Face causal LM priors --------------------------------------------------------------------------------

_prior_cache: dict[tuple, HFPrior] = {}
_cache_lock = threading.Lock()


@contextmanager
def _one_torch_thread():
    """Torch runs one intra-op thread while a window is coded (parallelism comes from windows instead). OpenMP's
    thread count is a per-thread setting, so every thread that runs the model sets it itself, each time."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the folder's config, tokenizer and weight files (names and bytes), shortened."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix in (".md", ".txt") and path.name not in ("merges.txt", "vocab.txt"):
            continue
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_hf_prior(folder: str, device: str = "auto") -> HFPrior:
    """The HF prior in ``folder`` (cached per process, keyed by the folder's files' sizes and times)."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"prior {folder!r} is neither 'builtin' nor a folder")
    stamp = tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))
    key = (str(path), device, stamp)
    with _cache_lock:
        if key not in _prior_cache:
            _prior_cache.clear()  # one LM prior at a time in memory
            _prior_cache[key] = HFPrior(path, device)
        return _prior_cache[key]


def check_prior_folder(folder: str, serialisation: Serialisation) -> None:
    """Cheap checks before a job is queued: a causal LM's config and a tokenizer that writes the serialisation
    back exactly (the weights are loaded only when coding starts)."""
    import json

    from .._torch import check_model_dir, load_tokenizer

    path = check_model_dir(folder)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path}: unreadable config.json ({exc})") from None
    architectures = config.get("architectures") or []
    if not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ModelFormatError(f"{path.name} is not a causal language model (architectures: {architectures})")
    _check_tokenizer(load_tokenizer(path), serialisation, path.name)


def _check_tokenizer(tokenizer, serialisation: Serialisation, name: str) -> None:
    sample = bytes(range(256)) + bytes(range(255, -1, -3))
    text = serialisation.text(sample)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) != text:
        raise ConfigError(f"prior {name}: its tokenizer cannot encode the {serialisation.format} serialisation "
                          f"(separator {serialisation.separator!r}) exactly; choose another serialisation or prior")


class HFPrior:
    """A local Hugging Face causal LM and its tokenizer, used as the next-token prior."""

    def __init__(self, folder: Path, device: str = "auto"):
        from .._torch import load_model, load_tokenizer, resolve_device

        self.folder = folder
        self.tokenizer = load_tokenizer(folder)
        self.device = resolve_device(device)
        self.model = load_model(folder, device=self.device, dtype="float32")
        if not getattr(self.model, "can_generate", lambda: False)() and not hasattr(self.model, "lm_head"):
            raise ModelFormatError(f"{folder}: not a causal language model")
        self.vocab = int(self.model.get_output_embeddings().weight.shape[0])
        bos = self.tokenizer.bos_token_id
        self.bos = int(bos if bos is not None else (self.tokenizer.eos_token_id or 0))
        self.name = f"hf:{folder.name}:{folder_fingerprint(folder)}"
        self.fingerprint = self.name
        self._legal: dict[frozenset, np.ndarray] = {}
        # transformers >= 5.x names the KV cache ``cache``; earlier versions ``past_key_values``
        forward = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self.lock = threading.Lock()

    # -- tokens ------------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def detokenize(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def check_serialisation(self, serialisation: Serialisation) -> None:
        """Refuse a tokenizer that cannot write the serialisation back exactly (unknown or altered characters)."""
        _check_tokenizer(self.tokenizer, serialisation, self.folder.name)

    def legal_mask(self, serialisation: Serialisation) -> np.ndarray:
        """Tokens made only of characters the serialisation can contain (the renormalisation's support)."""
        alphabet = serialisation.alphabet
        if alphabet not in self._legal:
            mask = np.zeros(self.vocab, dtype=bool)
            for token in range(min(self.vocab, len(self.tokenizer))):
                text = self.detokenize([token])
                mask[token] = bool(text) and all(c in alphabet for c in text)
            self._legal[alphabet] = mask
        return self._legal[alphabet]

    # -- the coding loop -----------------------------------------------------------------------------------------
    def code_window(self, coder, tokens: list[int] | None, count: int, legal: np.ndarray | None,
                    cancel: Callable[[], None] | None = None) -> list[int]:
        """Code ``tokens`` (encoder) or decode ``count`` tokens (decoder), one token at a time with the KV
        cache. The one loop both sides run."""
        import torch

        out: list[int] = []
        past = None
        current = self.bos
        with torch.inference_mode(), _one_torch_thread():
            for t in range(count):
                ids = torch.tensor([[current]], device=self.device)
                result = self.model(input_ids=ids, use_cache=True, **{self._cache_arg: past})
                past = getattr(result, self._cache_arg)
                probs = torch.softmax(result.logits[0, -1].float(), dim=-1).cpu().numpy()
                freq = quantise(probs, legal)
                if coder.decoding:
                    current = coder.one(freq)
                    if legal is not None and not legal[current]:
                        raise CorruptArtifactError(f"{coder.what}: decoded an illegal token: prediction mismatch")
                else:
                    current = coder.one(freq, tokens[t])
                out.append(current)
                if cancel is not None and t % 256 == 255:
                    cancel()
        return out
