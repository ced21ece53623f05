"""``rtn``: uniform round-to-nearest int-k (lossy), the honest baseline for ``hyper``.

Per quantised tensor (the rest is kept losslessly, see :mod:`modelcodecs._lossy`), every unit of weights -- an
output channel (row: the first dimension against the rest, ``granularity="channel"``) or ``group_size``
consecutive weights (``granularity="group"``) -- gets its own asymmetric grid: lo = min, step = (max - min) /
(2^k - 1), q = round((w - lo) / step), w' = lo + q * step, so |w - w'| <= step / 2. Each chunk's payload is the
units' float32 steps, then their float32 minimums, then the q's packed at k bits: every byte of side information is
in the artifact and counted. ``on_delta`` quantises fine-tune - base instead (needs the base).
"""

from __future__ import annotations

import numpy as np

from ._lossy import LossyWeightCodec, meta_number, pack_bits, packed_size, unpack_bits
from .abc import Param, TensorSpec
from .errors import CorruptArtifactError

GRANULARITIES = ("channel", "group")


class RTNCodec(LossyWeightCodec):
    """Uniform round-to-nearest int-k per output channel or per group, float32 scales stored (lossy)."""

    codec_id = "rtn"
    description = (
        "Lossy uniform round-to-nearest int-k (k = 2..8) per output channel or per group of weights, with a "
        "float32 step and minimum per channel/group stored (the baseline Hyper-Compression is measured against). "
        "1-D, integer and non-finite tensors are kept losslessly; on_delta quantises fine-tune - base instead."
    )
    params = (
        Param("bits", int, 4, "bits per quantised weight (k)", minimum=2, maximum=8),
        Param("granularity", str, "channel", "one grid per output channel (row) or per group of group_size "
              "consecutive weights", choices=GRANULARITIES),
        Param("group_size", int, 128, "weights per group (granularity=group)", minimum=8, maximum=1 << 20),
    ) + LossyWeightCodec.common_params

    def _unit_for(self, spec: TensorSpec) -> int:
        if self.granularity == "channel":
            return spec.numel // spec.shape[0]
        return self.group_size

    def _encode_block(self, block: np.ndarray, side: dict, spec: TensorSpec) -> tuple[bytes, dict]:
        unit = self._unit_for(spec)
        groups = self._grouped(block, unit)
        lo = groups.min(axis=1)
        hi = groups.max(axis=1)
        levels = (1 << self.bits) - 1
        step = ((hi.astype(np.float64) - lo) / levels).astype(np.float32)
        safe = np.where(step > 0, step, 1.0).astype(np.float32)
        q = np.clip(np.rint((groups - lo[:, None]) / safe[:, None]), 0, levels)
        q = q.reshape(-1)[:block.size]
        payload = step.tobytes() + lo.astype(np.float32).tobytes() + pack_bits(q, self.bits)
        return payload, {"bits": self.bits, "unit": unit}

    @staticmethod
    def _grouped(block: np.ndarray, unit: int) -> np.ndarray:
        """(units, unit) view; a last partial group is padded with its own last value."""
        short = -block.size % unit
        if short:
            block = np.concatenate([block, np.full(short, block[-1], dtype=block.dtype)])
        return block.reshape(-1, unit)

    def _decode_block(self, payload, meta: dict, count: int, spec: TensorSpec, what: str) -> np.ndarray:
        bits = meta_number(meta, "bits", what, integer=True, low=2, high=8)
        unit = meta_number(meta, "unit", what, integer=True, low=1, high=spec.numel)
        units = -(-count // unit)
        head = 8 * units
        if len(payload) != head + packed_size(count, bits):
            raise CorruptArtifactError(f"{what}: {len(payload)} bytes, expected {head + packed_size(count, bits)} "
                                       f"for {units} groups of {unit} at {bits} bits")
        raw = bytes(payload)
        step = np.frombuffer(raw, dtype=np.float32, count=units)
        lo = np.frombuffer(raw, dtype=np.float32, count=units, offset=4 * units)
        q = unpack_bits(raw[head:], count, bits, what).astype(np.float32)
        group = np.arange(count) // unit
        return lo[group] + q * step[group]


__all__ = ["RTNCodec"]
