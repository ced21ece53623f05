"""LM-GC: lossless gradient compression with a prior (a causal LM or the built-in context model) driving a range
coder over the gradients' serialised text. See :mod:`modelcodecs.lmgc.codec`."""

from .codec import LMGCCodec

__all__ = ["LMGCCodec"]
