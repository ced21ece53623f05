"""BitDelta: 1-bit sign deltas with distilled scales (``codec.py``), the distillation (``distill.py``) and which
weights are linear (``structure.py``). Importing this package does not import torch."""

from .codec import BitDeltaCodec

__all__ = ["BitDeltaCodec"]
