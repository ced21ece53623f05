"""Checkpoint series: every step restored byte for byte, keyframes bound the chain, bad input refused by step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from common import assert_same_tree, base_tensors, write_safetensors

from modelcodecs import series
from modelcodecs.errors import CorruptArtifactError


def _run(root: Path, steps=(10, 20, 30, 40, 50), reshape_at: int | None = None) -> Path:
    """A training run: checkpoint-<k> folders, each a small nudge of the one before (every dtype in them)."""
    import torch

    tensors = base_tensors(0)
    run = root / "run"
    for i, step in enumerate(steps):
        gen = torch.Generator().manual_seed(step)
        nxt = {}
        for name, t in tensors.items():
            if t.is_floating_point() and t.numel():
                nxt[name] = (t.double() + torch.randn(t.shape, generator=gen, dtype=torch.float64) * 1e-3).to(t.dtype)
            else:
                nxt[name] = t.clone()
        if reshape_at is not None and step == reshape_at:
            nxt["layers.0.mlp.up.weight"] = torch.randn(32, 20, generator=gen) * 0.02  # reshaped mid-series
            nxt["embed.weight"] = torch.cat([nxt["embed.weight"], nxt["embed.weight"][:4]])  # 4 rows added
        tensors = nxt
        write_safetensors(run / f"checkpoint-{step}", tensors)
    return run


def test_every_step_restores_byte_for_byte_and_chains_stay_short(tmp_path):
    run = _run(tmp_path, steps=(10, 20, 30, 40, 50, 60, 70))
    summary = series.compress_series(run, tmp_path / "s", keyframe_every=3, threads=1)
    assert [c["step"] for c in summary.checkpoints] == [10, 20, 30, 40, 50, 60, 70]
    assert [c["base_step"] for c in summary.checkpoints] == [None, 10, 20, None, 40, 50, None]
    assert [c["codec"] for c in summary.checkpoints][:2] == ["fmdelta-nobase", "fmdelta"]
    assert summary.ratio > 1
    info = series.series_info(tmp_path / "s")
    assert max(c["links"] for c in info["checkpoints"]) == 3
    for step in (10, 20, 30, 40, 50, 60, 70):
        out = tmp_path / f"r{step}"
        restored = series.restore_checkpoint(tmp_path / "s", step, out, threads=1)
        assert restored["links"] <= 3
        assert_same_tree(run / f"checkpoint-{step}", out)
    report = series.verify_series(tmp_path / "s", threads=1)
    assert report.ok and [c["step"] for c in report.checkpoints if c["ok"]] == [10, 20, 30, 40, 50, 60, 70]


def test_appending_later_continues_the_chain(tmp_path):
    run = _run(tmp_path, steps=(5, 10, 15))
    series.compress_series([(5, run / "checkpoint-5")], tmp_path / "s", keyframe_every=4, interval=5, threads=1)
    added = series.series_append(tmp_path / "s", [(10, run / "checkpoint-10"), (15, run / "checkpoint-15")],
                                 threads=1)
    assert [r["base_step"] for r in added] == [5, 10]
    series.restore_checkpoint(tmp_path / "s", 15, tmp_path / "r15", threads=1)
    assert_same_tree(run / "checkpoint-15", tmp_path / "r15")
    with pytest.raises(series.SeriesError, match="step 20 is missing"):
        series.series_append(tmp_path / "s", [(25, run / "checkpoint-15")], threads=1)
    with pytest.raises(series.SeriesError, match="step 15 comes after step 15"):
        series.series_append(tmp_path / "s", [(15, run / "checkpoint-15")], threads=1)


def test_missing_and_reordered_steps_are_refused_by_name(tmp_path):
    run = _run(tmp_path, steps=(10, 20, 40))
    with pytest.raises(series.SeriesError, match="step 30 is missing"):
        series.compress_series(run, tmp_path / "s", threads=1)
    assert not (tmp_path / "s").exists()
    pairs = [(10, run / "checkpoint-10"), (40, run / "checkpoint-40"), (20, run / "checkpoint-20")]
    with pytest.raises(series.SeriesError, match="step 20 comes after step 40"):
        series.compress_series(pairs, tmp_path / "s", interval=10, threads=1)
    assert not (tmp_path / "s").exists()


def test_reshaped_tensor_is_coded_without_base_and_listed(tmp_path):
    run = _run(tmp_path, steps=(1, 2, 3), reshape_at=2)
    summary = series.compress_series(run, tmp_path / "s", threads=1)
    by_step = {c["step"]: c for c in summary.checkpoints}
    # the reshaped tensor has no base; the one that only grew rows is coded against the rows it shares
    assert by_step[2]["tensors_without_base"] == ["layers.0.mlp.up.weight"]
    assert by_step[3]["tensors_without_base"] == []
    series.restore_checkpoint(tmp_path / "s", 3, tmp_path / "r3", threads=1)
    assert_same_tree(run / "checkpoint-3", tmp_path / "r3")


def test_deleting_a_middle_checkpoint_rebases_the_next(tmp_path):
    run = _run(tmp_path, steps=(10, 20, 30, 40))
    series.compress_series(run, tmp_path / "s", keyframe_every=8, threads=1)
    assert series.delete_checkpoint(tmp_path / "s", 20, threads=1) == {"deleted": 20, "rebased": 30}
    info = series.series_info(tmp_path / "s")
    assert [(c["step"], c["base_step"]) for c in info["checkpoints"]] == [(10, None), (30, 10), (40, 30)]
    assert len(list((tmp_path / "s").glob("*.dvz"))) == 3
    for step in (10, 30, 40):
        series.restore_checkpoint(tmp_path / "s", step, tmp_path / f"r{step}", threads=1)
        assert_same_tree(run / f"checkpoint-{step}", tmp_path / f"r{step}")
    # deleting the keyframe: its successor becomes the keyframe
    assert series.delete_checkpoint(tmp_path / "s", 10, threads=1)["rebased"] == 30
    assert series.series_info(tmp_path / "s")["checkpoints"][0]["base_step"] is None
    series.restore_checkpoint(tmp_path / "s", 40, tmp_path / "r40b", threads=1)
    assert_same_tree(run / "checkpoint-40", tmp_path / "r40b")
    with pytest.raises(series.SeriesError, match="step 20 is not in the series"):
        series.restore_checkpoint(tmp_path / "s", 20, tmp_path / "x", threads=1)


def test_corrupted_link_names_the_checkpoint(tmp_path):
    run = _run(tmp_path, steps=(10, 20, 30))
    series.compress_series(run, tmp_path / "s", threads=1)
    manifest = json.loads((tmp_path / "s" / "series.json").read_text())
    link = tmp_path / "s" / manifest["checkpoints"][1]["file"]
    data = bytearray(link.read_bytes())
    data[len(data) // 2] ^= 0x40
    link.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="checkpoint step 20"):
        series.restore_checkpoint(tmp_path / "s", 30, tmp_path / "r30", threads=1)
    assert not (tmp_path / "r30").exists()
    report = series.verify_series(tmp_path / "s", threads=1)
    assert not report.ok and "checkpoint step 20" in report.message
    assert [c["ok"] for c in report.checkpoints] == [True, False, False]
    # a link whose recorded hash was also forged still fails inside the container checks, named the same way
    manifest["checkpoints"][1]["sha256"] = series._sha256_file(link)
    (tmp_path / "s" / "series.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="checkpoint step 20"):
        series.restore_checkpoint(tmp_path / "s", 20, tmp_path / "r20", threads=1)


def test_series_command_line(tmp_path, capsys):
    from modelcodecs.cli import main

    run = _run(tmp_path, steps=(100, 200, 300))
    assert main(["series", "compress", str(run), "-o", str(tmp_path / "s"), "--keyframe-every", "2",
                 "--threads", "1", "--json"]) == 0
    assert [c["base_step"] for c in json.loads(capsys.readouterr().out)["checkpoints"]] == [None, 100, None]
    assert main(["series", "restore", str(tmp_path / "s"), "200", "-o", str(tmp_path / "r")]) == 0
    assert_same_tree(run / "checkpoint-200", tmp_path / "r")
    assert main(["series", "verify", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("OK")
    assert main(["series", "restore", str(tmp_path / "s"), "250", "-o", str(tmp_path / "x")]) == 2
    assert "step 250 is not in the series" in capsys.readouterr().err
    assert main(["series", "delete", str(tmp_path / "s"), "100"]) == 0
    assert main(["series", "info", str(tmp_path / "s"), "--json"]) == 0
    assert [c["step"] for c in json.loads(capsys.readouterr().out.split("\n", 1)[1])["checkpoints"]] == [200, 300]
