"""Hostile model folders: symlink loops, JSON nested thousands of levels deep. Each is a ModelCodecError (the web
app turns it into a 400), never a RecursionError or RuntimeError."""

from __future__ import annotations

import json
import os
import struct

import pytest
from common import base_tensors, write_safetensors

import modelcodecs
from modelcodecs.errors import ModelFormatError


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [5000, 100000])
def test_config_json_nested_deeply(tmp_path, depth):
    folder = write_safetensors(tmp_path / "m", base_tensors(), extras=True)
    (folder / "config.json").write_text('{"architectures": ' + _deep(depth) + "}")
    with pytest.raises(ModelFormatError, match="config.json"):
        modelcodecs.read_model_info(folder)


@pytest.mark.parametrize("depth", [5000, 100000])
def test_safetensors_header_nested_deeply(tmp_path, depth):
    folder = tmp_path / "m"
    folder.mkdir()
    header = ('{"__metadata__": ' + _deep(depth) + "}").encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    for call in (lambda: modelcodecs.read_model_info(folder), lambda: modelcodecs.compare_models(folder, folder)):
        with pytest.raises(ModelFormatError, match="nested too deeply"):
            call()


def test_shard_index_nested_deeply(tmp_path):
    folder = write_safetensors(tmp_path / "m", base_tensors(), extras=True)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ' + _deep(50000) + "}")
    with pytest.raises(ModelFormatError, match="shard index"):
        modelcodecs.read_model_info(folder)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_symlink_loop_inside_the_folder(tmp_path, where):
    folder = write_safetensors(tmp_path / "m", base_tensors(), extras=True)
    parent = folder if where == "file" else folder / "sub"
    parent.mkdir(exist_ok=True)
    os.symlink(parent / "loop-a", parent / "loop-b")
    os.symlink(parent / "loop-b", parent / "loop-a")
    with pytest.raises(ModelFormatError, match="symlink loop"):
        modelcodecs.read_model_info(folder)


def test_architecture_and_model_type_are_strings_or_none(tmp_path):
    folder = write_safetensors(tmp_path / "m", base_tensors(), extras=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [["nested"]], "model_type": {"a": 1}}))
    info = modelcodecs.read_model_info(folder)
    assert info["architecture"] is None and info["model_type"] is None
