"""File-hash manifests: the sha256 of every file of a model folder, kept outside any artifact.

An artifact's own hashes prove only that it is intact: whoever edits it can re-seal them. A manifest written from
the original folder (``modelcodecs manifest FOLDER -o model.manifest.json``) and kept elsewhere lets ``modelcodecs
verify ARTIFACT --manifest model.manifest.json`` prove that the artifact restores exactly that folder.

Format (JSON): ``{"format": "deltavault-manifest", "version": 1, "files": [{"name", "size", "sha256"}, ...]}``; the
``files`` list has the shape of ``read_model_info(...)["files"]`` (what the web app records).
"""

from __future__ import annotations

import json
import os
import re

from .errors import ConfigError
from .hfio import ModelFolder

FORMAT = "deltavault-manifest"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def manifest_of(folder: str | os.PathLike) -> dict:
    """The manifest of a model folder (hashes every file)."""
    with ModelFolder(folder) as model:
        files = [{"name": p.name, "size": p.size, "sha256": model.file_sha256(p.name)} for p in model.files]
    return {"format": FORMAT, "version": 1, "files": files}


def manifest_hashes(manifest: dict | list) -> dict[str, str]:
    """File name -> sha256 of a manifest (or of a bare ``files`` list); ConfigError when malformed."""
    files = manifest.get("files") if isinstance(manifest, dict) else manifest
    if not isinstance(files, list) or not files:
        raise ConfigError("a manifest is a JSON object with a non-empty 'files' list")
    hashes: dict[str, str] = {}
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("sha256"), str)
                and _HEX64.fullmatch(entry["sha256"])):
            raise ConfigError("every manifest entry needs a 'name' and a 64-hex-digit 'sha256'")
        if entry["name"] in hashes:
            raise ConfigError(f"the manifest names {entry['name']!r} twice")
        hashes[entry["name"]] = entry["sha256"]
    return hashes


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a JSON manifest ({type(exc).__name__})") from None
    return manifest_hashes(data)
