"""Verifying against hashes kept outside the artifact. An artifact's own hashes prove it is intact, not that it
holds the right model: a forger re-seals them (here: an artifact of another fine-tune, under the same file names,
is a perfectly sealed artifact). Only hashes from elsewhere (a reference folder, a manifest) catch it."""

from __future__ import annotations

import json

import pytest
from common import base_tensors, finetune, make_pair, tree_hashes, write_safetensors

import modelcodecs
from modelcodecs.cli import main
from modelcodecs.errors import ConfigError
from modelcodecs.manifest import manifest_hashes, manifest_of, read_manifest


@pytest.fixture
def forged(tmp_path):
    """(base_dir, ft_dir, genuine artifact, forged artifact: another fine-tune of the same base, fully sealed)."""
    base_dir, ft_dir = make_pair(tmp_path)
    other_dir = write_safetensors(tmp_path / "other", finetune(base_tensors(0), seed=99), extras=True)
    genuine, forged = tmp_path / "genuine.dvz", tmp_path / "forged.dvz"
    modelcodecs.compress_model(ft_dir, genuine, codec="fmdelta", base_dir=base_dir, threads=1)
    modelcodecs.compress_model(other_dir, forged, codec="fmdelta", base_dir=base_dir, threads=1)
    return base_dir, ft_dir, genuine, forged


def test_a_sealed_forgery_passes_its_own_hashes_but_not_a_manifest(forged):
    base_dir, ft_dir, genuine, fake = forged
    assert modelcodecs.verify_artifact(fake, base_dir=base_dir).ok  # intact: its own hashes agree
    expected = manifest_hashes(manifest_of(ft_dir))
    report = modelcodecs.verify_artifact(fake, base_dir=base_dir, expected_files=expected)
    assert not report.ok and "model.safetensors: differs from the expected files" in report.message
    assert [f["name"] for f in report.files if not f["ok"]] == ["model.safetensors"]
    assert modelcodecs.verify_artifact(genuine, base_dir=base_dir, expected_files=expected).ok
    assert not modelcodecs.verify_artifact(fake, base_dir=base_dir, reference_dir=ft_dir).ok


def test_missing_and_extra_files_are_reported(forged):
    base_dir, ft_dir, genuine, _ = forged
    expected = manifest_hashes(manifest_of(ft_dir))
    expected["tokenizer.json"] = "0" * 64
    report = modelcodecs.verify_artifact(genuine, base_dir=base_dir, expected_files=expected)
    assert not report.ok and "tokenizer.json: present in only one" in report.message
    with pytest.raises(ConfigError):
        modelcodecs.verify_artifact(genuine, base_dir=base_dir, reference_dir=ft_dir, expected_files=expected)


@pytest.mark.parametrize("bad", [{}, {"files": []}, {"files": [{"name": "a"}]}, [{"name": "a", "sha256": "xyz"}],
                                 {"files": [{"name": "a", "sha256": "a" * 64}, {"name": "a", "sha256": "b" * 64}]}])
def test_malformed_manifests(bad):
    with pytest.raises(ConfigError):
        manifest_hashes(bad)


def test_cli_manifest_and_verify(forged, tmp_path, capsys):
    base_dir, ft_dir, genuine, fake = forged
    manifest = tmp_path / "ft.manifest.json"
    assert main(["manifest", str(ft_dir), "-o", str(manifest)]) == 0
    assert read_manifest(manifest) == tree_hashes(ft_dir)
    capsys.readouterr()
    assert main(["verify", str(genuine), "--base", str(base_dir), "--manifest", str(manifest), "-q"]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["verify", str(fake), "--base", str(base_dir), "--manifest", str(manifest), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and "differs" in out["message"]
    assert main(["manifest", str(ft_dir), "-o", str(manifest)]) == 1  # never overwrites
    (tmp_path / "junk.json").write_text("[" * 100000)
    assert main(["verify", str(genuine), "--base", str(base_dir), "--manifest", str(tmp_path / "junk.json")]) == 2
