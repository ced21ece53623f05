"""A structure-aware fuzz of the artifact index: the index of a small valid artifact is parsed, one node is
changed (another type, a deep nesting, a huge or negative number, a long string, a key removed or added, a list
item dropped or repeated, a value moved from elsewhere), and the artifact is re-sealed (footer offset, length and
sha256 fixed) so the change reaches the schema checks and the decoder.

Each mutant must give a ModelCodecError, or restore exactly the original files: never another exception, a
hang or silently different bytes.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest
from common import make_pair, reseal_index, tree_hashes

import modelcodecs
from modelcodecs.container import ContainerReader
from modelcodecs.errors import CorruptArtifactError, ModelCodecError

MUTANTS = 150
DEEP = "__deeply_nested__"


def _nodes(value, path=()):
    """Every (path, value) of a JSON tree, the root included."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nodes(item, (*path, i))


def _replace(tree, path, new):
    if not path:
        return new
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return tree


def _strange_value(rng: random.Random, tree):
    return rng.choice([
        None, True, False, 0, -1, 1, 2**63, -(2**70), 1.5, float("1e308"), "", "x" * rng.choice([1, 300, 70000]),
        "\u0000", [], {}, [[]], {"": None}, [0] * 1000, DEEP,
        rng.choice(list(_nodes(tree)))[1],  # a value moved from elsewhere in the index
    ])


def _mutate(index: dict, rng: random.Random) -> dict:
    tree = json.loads(json.dumps(index))
    path, node = rng.choice(list(_nodes(tree)))
    action = rng.choice(["replace", "replace", "replace", "drop", "add", "repeat", "wrap"])
    if action == "drop" and path:
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        del parent[path[-1]]
    elif action == "add" and isinstance(node, dict):
        node[rng.choice(["extra", "same_as", "base", "chunks", "segments"])] = _strange_value(rng, tree)
    elif action == "repeat" and isinstance(node, list) and node:
        node.append(json.loads(json.dumps(rng.choice(node))))
    elif action == "wrap":
        tree = _replace(tree, path, [node])
    else:
        tree = _replace(tree, path, _strange_value(rng, tree))
    return tree


def _dump(tree, rng: random.Random) -> bytes:
    text = json.dumps(tree, separators=(",", ":"))
    depth = rng.choice([5000, 20000, 100000])  # too deep for json.dumps to write: spliced in as text
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth).encode()


def _good_artifact(tmp_path, codec):
    base_dir, ft_dir = make_pair(tmp_path)
    good = tmp_path / "good.dvz"
    modelcodecs.compress_model(ft_dir, good, codec={"id": codec}, base_dir=base_dir, threads=1)
    return base_dir, ft_dir, good


@pytest.mark.parametrize("codec", ["xor-zstd", "fmdelta"])
def test_index_structure_fuzz(tmp_path, codec):
    base_dir, ft_dir, good = _good_artifact(tmp_path, codec)
    expected = tree_hashes(ft_dir)
    with ContainerReader(good) as reader:
        index = reader.index
    rng = random.Random(20261202)
    path, out = tmp_path / "mutant.dvz", tmp_path / "out"
    outcomes = {"error": 0, "restored": 0}
    for i in range(MUTANTS):
        reseal_index(good, path, _dump(_mutate(index, rng), rng))
        try:
            modelcodecs.inspect_artifact(path)
            modelcodecs.decompress_model(path, out, base_dir=base_dir, threads=1)
        except ModelCodecError:
            outcomes["error"] += 1
            assert not out.exists(), f"mutant {i}: partial output left behind"
            continue
        assert tree_hashes(out) == expected, f"mutant {i} was accepted but restored different bytes"
        outcomes["restored"] += 1
        shutil.rmtree(out)
    assert outcomes["error"] > MUTANTS // 2, outcomes


@pytest.mark.parametrize("value", [[], {}, ["F32"], None, 3])
def test_resealed_index_with_a_dtype_of_another_type_is_corrupt(tmp_path, value):
    base_dir, _, good = _good_artifact(tmp_path, "fmdelta")
    with ContainerReader(good) as reader:
        index = reader.index
    index["tensors"][0]["dtype"] = value
    bad = tmp_path / "bad.dvz"
    reseal_index(good, bad, json.dumps(index).encode())
    for call in (lambda: modelcodecs.verify_artifact(bad, base_dir=base_dir),
                 lambda: modelcodecs.decompress_model(bad, tmp_path / "out", base_dir=base_dir),
                 lambda: modelcodecs.inspect_artifact(bad)):
        with pytest.raises(CorruptArtifactError, match="dtype"):
            call()


@pytest.mark.parametrize("depth", [5000, 100000])
def test_deeply_nested_index_is_corrupt(tmp_path, depth):
    _, _, good = _good_artifact(tmp_path, "zstd")
    bad = tmp_path / "bad.dvz"
    reseal_index(good, bad, ("[" * depth + "]" * depth).encode())
    with pytest.raises(CorruptArtifactError):
        modelcodecs.inspect_artifact(bad)
