"""The ``lmgc`` codec: gradient tensors, window by window, range-coded with a prior's probabilities.

Each float tensor is cut into independent windows (chunks). A window's bytes are serialised as the paper does
(hex with a separator, or ISO-8859-1 characters, in groups of ``bytes_per_group`` bytes); the prior predicts the
window's symbols one after the other and constriction's range coder codes them with the quantised probabilities.
Each chunk's meta records the element count ``n``, the number of coded tokens (``tokens``), the crc32 of the
window's original bytes (``crc``, checked after decoding: a prediction that differs on the decoding side raises
:class:`CorruptArtifactError`, never a wrong tensor), the prior's fingerprint (``prior``: decoding with another
prior is refused by name) and the ideal code length (``ideal_bits``) beside the real one (the payload).
Non-float tensors (step counters, masks) are coded losslessly by byte planes + zstd (coder ``fallback``).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .._bytecoding import planes_decode, planes_encode, zstd_compress, zstd_decompress
from .._threads import iter_ordered, resolve_threads
from .._torch import DEVICE_CHOICES
from ..abc import DTYPE_SIZES, FLOAT_DTYPES, CancelCheck, Codec, EncodedChunk, Param, TensorSpec, check_cancel
from ..errors import CorruptArtifactError, UnsupportedDtypeError, WrongPriorError
from . import priors
from .serialise import FORMATS, SEPARATORS, Serialisation

FALLBACK_CHUNK = 4 << 20


@dataclass
class CodingStats:
    """Running totals while a codec instance codes (read by progress reporters: windows and bits per float)."""

    windows: int = 0
    elements: int = 0
    payload_bytes: int = 0
    ideal_bits: float = 0.0
    tokens: int = 0

    def add(self, n: int, payload: int, ideal: float, tokens: int) -> None:
        self.windows += 1
        self.elements += n
        self.payload_bytes += payload
        self.ideal_bits += ideal
        self.tokens += tokens

    @property
    def bits_per_float(self) -> float:
        return 8 * self.payload_bytes / self.elements if self.elements else 0.0


class LMGCCodec(Codec):
    codec_id = "lmgc"
    lossless = True
    needs_prior = True
    input_kind = "gradients"
    # a window of near-constant gradients codes to a few words; payloads of LM windows can be smaller still
    max_expansion = 1 << 22
    description = ("LM-GC: gradients serialised as text and range-coded with a prior's next-symbol probabilities "
                   "(the built-in context model, or a local Hugging Face causal LM folder). Lossless.")
    params = (
        Param("prior", str, "builtin", "'builtin' (adaptive context model, no weights) or a local Hugging Face "
              "causal LM folder"),
        Param("serialisation", str, "hex", "how bytes become text: hex digits or ISO-8859-1 characters",
              choices=FORMATS),
        Param("separator", str, "none", "between groups of bytes", choices=tuple(SEPARATORS)),
        Param("bytes_per_group", int, 4, "bytes per group between separators", minimum=1, maximum=16),
        Param("window_elements", int, 65536, "elements per window (built-in prior)", minimum=256,
              maximum=1 << 22),
        Param("window_tokens", int, 2048, "tokens per window, BOS included (LM prior)", minimum=16,
              maximum=1 << 16),
        Param("renormalise", bool, True, "LM prior: renormalise over tokens the serialisation can contain"),
        Param("device", str, "auto", "LM prior: where the model runs", choices=DEVICE_CHOICES),
    )

    def __init__(self, **config):
        super().__init__(**config)
        self._serialisation = Serialisation(self.serialisation, self.separator, self.bytes_per_group)
        self._prior_obj = None
        self._lock = threading.Lock()
        self.stats = CodingStats()

    # -- the prior -----------------------------------------------------------------------------------------------
    @property
    def uses_lm(self) -> bool:
        return self.prior != "builtin"

    def load_prior(self):
        """The prior object (loaded once per codec instance; HF priors are cached per process)."""
        with self._lock:
            if self._prior_obj is None:
                if self.uses_lm:
                    prior = priors.load_hf_prior(self.prior, self.device)
                    prior.check_serialisation(self._serialisation)
                    self._prior_obj = prior
                else:
                    self._prior_obj = priors.BuiltinPrior()
            return self._prior_obj

    def check_prior(self) -> None:
        """Submit-time checks of an LM prior (a causal LM config, a tokenizer that writes the serialisation back
        exactly) without loading its weights."""
        if self.uses_lm:
            priors.check_prior_folder(self.prior, self._serialisation)

    def prepare(self, *, finetuned_dir, base_dir, progress=None, cancel=None) -> None:
        self.load_prior()

    # -- encode --------------------------------------------------------------------------------------------------
    def encode_tensor(self, spec: TensorSpec, data: memoryview, base: memoryview | None, *, threads: int = 1,
                      cancel: CancelCheck | None = None) -> Iterator[EncodedChunk]:
        if spec.dtype not in DTYPE_SIZES:
            raise UnsupportedDtypeError(f"lmgc: unsupported dtype {spec.dtype!r}")
        data = memoryview(data).cast("B")
        item = DTYPE_SIZES[spec.dtype]
        if spec.dtype not in FLOAT_DTYPES:
            yield from self._encode_fallback(data, item)
            return
        prior = self.load_prior()
        if self.uses_lm:
            windows = self._plan_lm_windows(prior, data, item, cancel)
            job = lambda w: self._encode_lm_window(prior, data, item, w, cancel)  # noqa: E731
        else:
            step = self.window_elements * item
            windows = [(a, min(len(data), a + step)) for a in range(0, len(data), step)]
            row = _row_length(spec)
            job = lambda w: self._encode_builtin_window(data[w[0]:w[1]], item, w[0] // item, row)  # noqa: E731
        yield from iter_ordered(job, windows, resolve_threads(threads), lambda: check_cancel(cancel))

    def _encode_fallback(self, data: memoryview, item: int) -> Iterator[EncodedChunk]:
        step = max(item, FALLBACK_CHUNK // item * item)
        for a in range(0, len(data), step):
            piece = data[a:a + step]
            yield EncodedChunk("fallback", planes_encode(piece, None, item, 19), {"n": len(piece) // item})

    def _chunk(self, payload: bytes, window: memoryview, item: int, tokens: int, ideal: float,
               extra: dict) -> EncodedChunk:
        n = len(window) // item
        self.stats.add(n, len(payload), ideal, tokens)
        return EncodedChunk("lmgc", payload, {"n": n, "tokens": tokens, "crc": zlib.crc32(window),
                                              "prior": self._prior_obj.fingerprint,
                                              "ideal_bits": round(ideal, 1), **extra})

    def _encode_builtin_window(self, window: memoryview, item: int, start: int, row: int) -> EncodedChunk:
        columns = _columns(window, item)
        zero = ~columns.any(axis=0)  # elements whose every bit is 0 (not -0.0): their map is coded by zstd
        zero_map = _zstd(np.packbits(zero).tobytes()) if zero.any() else b""
        if zero_map:
            columns = np.ascontiguousarray(columns[:, ~zero])
        side, first = b"", None
        layout = _side_layout(start, len(zero), row)
        if layout is not None and columns.shape[1]:
            rows, cols, n_rows = _positions(start, zero, row, layout)
            row_mean, col_mean = priors.BuiltinPrior.magnitudes(columns[0], rows, cols, n_rows, row)
            side = _zstd(row_mean.tobytes() + col_mean.tobytes())
            first = priors.BuiltinPrior.magnitude_context(row_mean, col_mean, rows, cols)
        # signs of a gradient (a sum of outer products) repeat from row to row: a sign map, zstd-coded, when it pays
        packed = np.packbits(columns[0] >> 7).tobytes()
        sign_map = _zstd(packed) if columns.shape[1] else b""
        if len(sign_map) + 16 < len(packed):
            columns[0] &= 0x7F
        else:
            sign_map = b""
        raw = priors.BuiltinPrior.raw_columns(columns, first)
        coder = priors.Encoder()
        priors.BuiltinPrior.code_window(coder, columns, raw, first)
        payload = zero_map + side + sign_map + coder.payload() + b"".join(columns[j].tobytes() for j in raw)
        ideal = coder.ideal_bits + 8 * (len(raw) * columns.shape[1] + len(zero_map) + len(side) + len(sign_map))
        return self._chunk(payload, window, item, columns.size - len(raw) * columns.shape[1], ideal,
                           {"raw": raw, "zero_map": len(zero_map), "side": len(side), "sign_map": len(sign_map)})

    def _plan_lm_windows(self, prior, data: memoryview, item: int, cancel) -> list[tuple[int, int, list[int]]]:
        """Cut the tensor into windows whose text tokenises to at most ``window_tokens - 1`` tokens."""
        limit = self.window_tokens - 1
        total = len(data) // item
        sample = min(total, 64)
        per_element = max(1e-3, len(prior.tokenize(self._serialisation.text(data[:sample * item]))) / sample)
        guess = max(1, int(limit / per_element * 0.9))
        windows, start = [], 0
        while start < total:
            check_cancel(cancel)
            count = min(guess, total - start)
            while True:
                tokens = prior.tokenize(self._serialisation.text(data[start * item:(start + count) * item]))
                if len(tokens) <= limit or count == 1:
                    break
                count = max(1, min(count - 1, int(count * limit / len(tokens) * 0.95)))
            if len(tokens) > limit:
                raise UnsupportedDtypeError(f"lmgc: one element serialises to {len(tokens)} tokens, more than "
                                            f"window_tokens - 1 = {limit}")
            windows.append((start * item, (start + count) * item, tokens))
            start += count
        return windows

    def _encode_lm_window(self, prior, data: memoryview, item: int, window, cancel) -> EncodedChunk:
        a, b, tokens = window
        text = self._serialisation.text(data[a:b])
        if prior.detokenize(tokens) != text:
            raise UnsupportedDtypeError(f"lmgc: prior {prior.name}'s tokenizer does not write this window back "
                                        f"exactly; choose another serialisation")
        legal = prior.legal_mask(self._serialisation) if self.renormalise else None
        renorm = legal is not None and bool(np.all(legal[np.asarray(tokens, dtype=np.int64)]))
        coder = priors.Encoder()
        prior.code_window(coder, tokens, len(tokens), legal if renorm else None, lambda: check_cancel(cancel))
        return self._chunk(coder.payload(), data[a:b], item, len(tokens), coder.ideal_bits, {"renorm": renorm})

    # -- decode --------------------------------------------------------------------------------------------------
    def decode_tensor(self, spec: TensorSpec, chunks: Sequence[EncodedChunk], base: memoryview | None,
                      out: memoryview, *, threads: int = 1, cancel: CancelCheck | None = None) -> None:
        if spec.dtype not in DTYPE_SIZES:
            raise CorruptArtifactError(f"{spec.name}: unsupported dtype {spec.dtype!r}")
        out = memoryview(out).cast("B")
        item = DTYPE_SIZES[spec.dtype]
        expected = "fallback" if spec.dtype not in FLOAT_DTYPES else "lmgc"
        jobs, offset = [], 0
        for i, chunk in enumerate(chunks):
            n = chunk.meta.get("n")
            if chunk.coder != expected or not _count(n) or n <= 0 or offset + n * item > spec.nbytes:
                raise CorruptArtifactError(f"{spec.name}: chunk {i} has a bad coder or size")
            jobs.append((chunk, offset, offset + n * item, f"{spec.name}: window {i}"))
            offset += n * item
        if offset != spec.nbytes:
            raise CorruptArtifactError(f"{spec.name}: chunks hold {offset} bytes, expected {spec.nbytes}")
        if expected == "lmgc" and jobs:
            prior = self._prior_for(chunks, spec.name)
        else:
            prior = None
        row = _row_length(spec)

        def job(task) -> None:
            chunk, a, b, what = task
            payload = chunk.payload  # read once
            if chunk.coder == "fallback":
                planes_decode(payload, None, out[a:b], item, what)
            elif self.uses_lm:
                self._decode_lm_window(prior, payload, chunk.meta, out[a:b], item, what, cancel)
            else:
                self._decode_builtin_window(payload, chunk.meta, out[a:b], item, what, a // item, row)
            if chunk.coder == "lmgc" and zlib.crc32(out[a:b]) != chunk.meta.get("crc"):
                raise CorruptArtifactError(f"{what}: decoded window fails its check (crc32): the prior's "
                                           f"predictions differ from the encoder's, or the payload is corrupted")

        for _ in iter_ordered(job, jobs, resolve_threads(threads), lambda: check_cancel(cancel)):
            pass

    def _prior_for(self, chunks: Sequence[EncodedChunk], name: str):
        recorded = {chunk.meta.get("prior") for chunk in chunks}
        if len(recorded) != 1 or not isinstance(next(iter(recorded)), str):
            raise CorruptArtifactError(f"{name}: windows name no single prior")
        recorded = recorded.pop()
        if recorded.startswith("hf:") != self.uses_lm:
            raise WrongPriorError(f"{name} was coded with prior {recorded!r}; this codec is configured with "
                                  f"prior {self.prior!r}")
        prior = self.load_prior()
        if prior.fingerprint != recorded:
            raise WrongPriorError(f"{name} was coded with prior {recorded!r}, but the prior given is "
                                  f"{prior.fingerprint!r}: decoding with another prior is refused")
        return prior

    def _decode_builtin_window(self, payload: bytes, meta: dict, out: memoryview, item: int, what: str,
                               start: int, row: int) -> None:
        n = out.nbytes // item
        raw, zero_map, side, sign_map = meta.get("raw"), meta.get("zero_map"), meta.get("side"), meta.get("sign_map")
        if not isinstance(raw, list) or any(not _count(j) or j >= item for j in raw) or raw != sorted(set(raw)) \
                or not _count(zero_map) or not _count(side) or not _count(sign_map) \
                or zero_map + side + sign_map > len(payload):
            raise CorruptArtifactError(f"{what}: bad raw-column list, zero map or side information")
        if zero_map:
            packed = np.frombuffer(zstd_decompress(payload[:zero_map], (n + 7) // 8, what), dtype=np.uint8)
            zero = np.unpackbits(packed, count=n).astype(bool)
            if np.any(np.unpackbits(packed)[n:]):
                raise CorruptArtifactError(f"{what}: zero map has bits past the window")
        else:
            zero = np.zeros(n, dtype=bool)
        kept = n - int(zero.sum())
        first = None
        layout = _side_layout(start, n, row)
        if side:
            if layout is None or not kept:
                raise CorruptArtifactError(f"{what}: side information for a window that has none")
            rows, cols, n_rows = _positions(start, zero, row, layout)
            means = np.frombuffer(zstd_decompress(payload[zero_map:zero_map + side], n_rows + row, what), np.uint8)
            first = priors.BuiltinPrior.magnitude_context(means[:n_rows], means[n_rows:], rows, cols)
        elif layout is not None and kept:
            raise CorruptArtifactError(f"{what}: side information is missing")
        signs = None
        if sign_map:
            if not kept:
                raise CorruptArtifactError(f"{what}: sign map for a window without elements")
            at = zero_map + side
            packed = np.frombuffer(zstd_decompress(payload[at:at + sign_map], (kept + 7) // 8, what), np.uint8)
            signs = np.unpackbits(packed, count=kept)
        body = payload[zero_map + side + sign_map:]
        raw_bytes = len(raw) * kept
        if len(body) < raw_bytes or (len(body) - raw_bytes) % 4:
            raise CorruptArtifactError(f"{what}: payload has the wrong size")
        columns = np.empty((item, kept), dtype=np.uint8)
        coded = len(body) - raw_bytes
        for k, j in enumerate(raw):
            columns[j] = np.frombuffer(body, np.uint8, kept, coded + k * kept)
        priors.BuiltinPrior.code_window(priors.Decoder(body[:coded], what), columns, raw, first)
        if signs is not None:
            if np.any(columns[0] & 0x80):
                raise CorruptArtifactError(f"{what}: a sign bit both in the map and in the coded bytes")
            columns[0] |= signs << 7
        elements = np.frombuffer(out, dtype=np.uint8).reshape(n, item)
        elements[zero] = 0
        elements[~zero] = columns[::-1].T

    def _decode_lm_window(self, prior, payload: bytes, meta: dict, out: memoryview, item: int, what: str,
                          cancel) -> None:
        count, renorm = meta.get("tokens"), meta.get("renorm")
        if not _count(count) or not 0 < count < self.window_tokens or not isinstance(renorm, bool):
            raise CorruptArtifactError(f"{what}: bad token count or flags")
        legal = prior.legal_mask(self._serialisation) if renorm else None
        tokens = prior.code_window(priors.Decoder(payload, what), None, count, legal, lambda: check_cancel(cancel))
        text = prior.detokenize(tokens)
        out[:] = self._serialisation.parse(text, out.nbytes, what)


def _zstd(data: bytes) -> bytes:
    """zstd for the small maps of a window: level 19 pays on large ones; on small ones it only costs time (its
    tables take longer to set up than the map takes to code)."""
    return zstd_compress(data, 19 if len(data) >= 1 << 14 else 6)


def _row_length(spec: TensorSpec) -> int:
    """Length of a row of the tensor seen as a matrix (its last dimension), or 0 for vectors."""
    return spec.shape[-1] if len(spec.shape) >= 2 else 0


def _side_layout(start: int, n: int, row: int) -> tuple[int, int] | None:
    """(first row, row count) of a window of ``n`` elements from element ``start``, when per-row and per-column
    magnitudes are worth sending (rows of at least 8 elements, side information under 1/8 of the elements)."""
    if row < 8 or n == 0:
        return None
    first, last = start // row, (start + n - 1) // row
    rows = last - first + 1
    return (first, rows) if 8 * (rows + row) <= n else None


def _positions(start: int, zero: np.ndarray, row: int, layout: tuple[int, int]):
    """Row (relative to the window's first row) and column of each kept element, and the row count."""
    first, rows = layout
    index = np.flatnonzero(~zero).astype(np.int64) + start
    return index // row - first, index % row, rows


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _columns(window: memoryview, item: int) -> np.ndarray:
    """item x n bytes, most significant byte (the last of each little-endian element) first."""
    return np.ascontiguousarray(np.frombuffer(window, dtype=np.uint8).reshape(-1, item).T[::-1])
