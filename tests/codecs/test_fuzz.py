"""A bounded, seeded decoder fuzz: random mutations of small valid artifacts.

Each mutated artifact must either raise a ModelCodecError subclass or restore exactly the original files (the
mutation hit nothing that matters). Never a crash, an unexpected exception type, or a silently wrong tensor.
"""

from __future__ import annotations

import random
import shutil

import pytest
from common import make_pair, tree_hashes

import modelcodecs
from modelcodecs.errors import ModelCodecError

MUTATIONS = 200


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.choice(["flip", "byte", "truncate", "insert", "delete", "splice", "zero"])
    pos = rng.randrange(len(buf))
    if kind == "flip":
        buf[pos] ^= 1 << rng.randrange(8)
    elif kind == "byte":
        buf[pos] = rng.randrange(256)
    elif kind == "truncate":
        del buf[pos:]
    elif kind == "insert":
        buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif kind == "delete":
        del buf[pos:pos + rng.randint(1, 8)]
    elif kind == "splice":
        src = rng.randrange(len(data))
        n = rng.randint(1, 32)
        buf[pos:pos + n] = data[src:src + n]
    else:
        buf[pos:pos + rng.randint(1, 64)] = bytes(min(64, len(buf) - pos))
    return bytes(buf)


@pytest.mark.parametrize("codec", ["xor-zstd", "fmdelta"])
def test_decoder_fuzz(tmp_path, codec):
    base_dir, ft_dir = make_pair(tmp_path)
    expected = tree_hashes(ft_dir)
    good = tmp_path / "good.dvz"
    modelcodecs.compress_model(ft_dir, good, codec={"id": codec}, base_dir=base_dir, threads=1)
    data = good.read_bytes()
    rng = random.Random(20261123)
    outcomes = {"error": 0, "restored": 0}
    path, out = tmp_path / "mutant.dvz", tmp_path / "out"
    for i in range(MUTATIONS):
        mutant = _mutate(data, rng)
        path.write_bytes(mutant)
        try:
            modelcodecs.decompress_model(path, out, base_dir=base_dir, threads=1)
        except ModelCodecError:
            outcomes["error"] += 1
            assert not out.exists(), f"mutation {i}: partial output left behind"
            continue
        # accepted: it must be exactly the original model
        assert tree_hashes(out) == expected, f"mutation {i} was accepted but restored different bytes"
        outcomes["restored"] += 1
        shutil.rmtree(out)
    assert outcomes["error"] > MUTATIONS // 2
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_inspect_fuzz(tmp_path):
    """inspect_artifact reads only the index: every mutation gives a valid dict or a ModelCodecError."""
    base_dir, ft_dir = make_pair(tmp_path)
    good = tmp_path / "good.dvz"
    modelcodecs.compress_model(ft_dir, good, codec="zstd")
    data = good.read_bytes()
    rng = random.Random(7)
    reference = modelcodecs.inspect_artifact(good)
    for _ in range(100):
        (tmp_path / "m.dvz").write_bytes(_mutate(data, rng))
        try:
            info = modelcodecs.inspect_artifact(tmp_path / "m.dvz")
        except ModelCodecError:
            continue
        # only payload bytes can change without the index noticing; the index itself is intact
        assert info["tensor_list"] == reference["tensor_list"]


def _reseal(data: bytes, mutated_payloads: bytes) -> bytes:
    """Replace the payload area and recompute every chunk's crc32 and the index checksum: a crafted artifact that
    passes the container's checks, so only the codecs' own validation and the hashes stand in the way."""
    import hashlib
    import json
    import zlib

    import zstandard

    from modelcodecs.container import FOOTER

    offset, length, _, end = FOOTER.unpack(data[-FOOTER.size:])
    index = json.loads(zstandard.ZstdDecompressor().decompress(data[offset:offset + length]))
    body = data[:16] + mutated_payloads

    def fix(rec):
        rec["crc32"] = zlib.crc32(body[rec["offset"]:rec["offset"] + rec["length"]])

    for t in index["tensors"]:
        for rec in t.get("chunks") or []:
            fix(rec)
    for f in index["files"]:
        for seg in f["segments"]:
            for rec in seg.get("chunks", []):
                fix(rec)
    blob = zstandard.ZstdCompressor().compress(json.dumps(index).encode())
    return body + blob + FOOTER.pack(offset, len(blob), hashlib.sha256(blob).digest(), end)


@pytest.mark.parametrize("codec", ["xor-zstd", "fmdelta"])
def test_codec_payload_fuzz_with_valid_checksums(tmp_path, codec):
    """Payload bytes mutated with every checksum recomputed: the codec rejects them or the sha256 checks do."""
    from modelcodecs.container import FOOTER

    base_dir, ft_dir = make_pair(tmp_path)
    expected = tree_hashes(ft_dir)
    good = tmp_path / "good.dvz"
    modelcodecs.compress_model(ft_dir, good, codec={"id": codec}, base_dir=base_dir, threads=1)
    data = good.read_bytes()
    index_offset = FOOTER.unpack(data[-FOOTER.size:])[0]
    payloads = data[16:index_offset]
    rng = random.Random(99)
    path, out = tmp_path / "mutant.dvz", tmp_path / "out"
    errors = 0
    for i in range(100):
        mutated = bytearray(payloads)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        path.write_bytes(_reseal(data, bytes(mutated)))
        try:
            modelcodecs.decompress_model(path, out, base_dir=base_dir, threads=1)
        except ModelCodecError:
            errors += 1
            assert not out.exists()
            continue
        assert tree_hashes(out) == expected, f"mutation {i} accepted with different bytes"
        shutil.rmtree(out)
    assert errors >= 90  # a flipped bit almost always changes the output; the hashes catch it
