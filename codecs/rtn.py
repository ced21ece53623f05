"""``rtn``: uniform round-to-nearest int-k (lossy), the honest baseline for ``hyper``.

Per quantised tensor (the rest is kept losslessly, see :mod:`modelcodecs._lossy`), every unit of weights -- an
output channel (row: the first dimension against the rest, ``granularity="channel"``) or ``group_size``
consecutive weights (``granularity="group"``) -- gets its own asymmetric grid: lo = min, step = (max - min) /
(2^k - 1), q = round((w - lo) / step), w' = lo + q * step, so |w - w'| <= step / 2. Each chunk's payload is the
units' float32 steps, then their float32 minimums, then the q's packed at k bits: every byte of side information is
in the artifact and counted. ``on_delta`` quantises fine-tune - base instead (needs the base). Quantising with
packing, and unpacking with dequantising, are one native pass each (``native/lossy``).
"""

from __future__ import annotations

import numpy as np

from . import _lossy_kernels as _kernels
from ._lossy import LossyWeightCodec, meta_number
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

    def _encode_block(self, block: np.ndarray, side: dict, spec: TensorSpec, restored: np.ndarray) \
            -> tuple[bytes, dict]:
        unit = self._unit_for(spec)
        payload = np.empty(8 * -(-block.size // unit) + _kernels.packed_bytes(block.size, self.bits), np.uint8)
        _kernels.rtn_quantise(block, unit, self.bits, payload, restored)
        return payload.tobytes(), {"bits": self.bits, "unit": unit}

    def _decode_block(self, payload, meta: dict, spec: TensorSpec, what: str, out: np.ndarray) -> None:
        bits = meta_number(meta, "bits", what, integer=True, low=2, high=8)
        unit = meta_number(meta, "unit", what, integer=True, low=1, high=spec.numel)
        try:
            _kernels.rtn_dequantise(np.frombuffer(payload, dtype=np.uint8), unit, bits, out)
        except CorruptArtifactError as exc:
            raise CorruptArtifactError(f"{what}: {exc}") from None


__all__ = ["RTNCodec"]
