"""Tensor digests. Artifacts of format 2 check each tensor, and fingerprint each base tensor, with xxh3-128 (tens
of GB/s: it costs nothing beside the coding); format 1 used sha256 for both. The sha256 of every file, what model
hubs show, is recorded and checked in both formats."""

from __future__ import annotations

import hashlib

import xxhash


def tensor_digest(data, version: int) -> str:
    """The digest a format-``version`` index records for these bytes."""
    if version == 1:
        return hashlib.sha256(data).hexdigest()
    return xxhash.xxh3_128_hexdigest(data)


def tensor_hasher(version: int):
    """A running hash (``update``, ``hexdigest``) that ends at ``tensor_digest`` of all the bytes given to it."""
    return hashlib.sha256() if version == 1 else xxhash.xxh3_128()
