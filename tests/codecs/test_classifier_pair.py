"""The classifier pair (``modelcodecs.classifier_pair``) and its benchmark case (``modelcodecs bench lossy
--classifier``), run on stand-ins of the two packages with their real layouts: a tiny BERT built from a config and a
small labelled corpus (the real encoder and corpus are bench/demo-only installs)."""

from __future__ import annotations

import json

import pytest
from common import classifier_packages_install

from modelcodecs import bench_lossy, evaluate
from modelcodecs.classifier_pair import LABELS, make_classifier_pair


@pytest.fixture
def packages(tmp_path_factory, monkeypatch):
    return classifier_packages_install(tmp_path_factory.mktemp("site"), monkeypatch)


def test_pair_is_fine_tuned_from_the_packaged_encoder_and_reused(packages, tmp_path):
    from safetensors.numpy import load_file

    steps = []
    pair = make_classifier_pair(tmp_path / "pair", steps=3, batch_size=8, heldout_rows=8,
                                progress=lambda done, total, stage: steps.append((done, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    # 240 tweets sorted by label, 48 below the confidence cut; one in ten (by a hash of the text) held out, the
    # first 8 of them in hash order: a mix of labels, not the corpus's first label only
    heldout = evaluate.read_labelled(pair.heldout)
    assert len(heldout) == pair.info["heldout_rows"] == 8 and 170 < pair.info["train_rows"] < 192
    assert len({label for _, label in heldout}) > 1
    base, tuned = load_file(pair.base / "model.safetensors"), load_file(pair.finetuned / "model.safetensors")
    assert set(base) == set(tuned) and "classifier.weight" in base
    assert any((base[k] != tuned[k]).any() for k in base)  # the fine-tune moved the weights
    assert evaluate.classifier_labels(pair.finetuned) == list(LABELS)
    scores = evaluate.evaluate_classification(pair.finetuned, pair.heldout, device="cpu")
    assert 0 <= scores["accuracy"] <= 1 and scores["examples"] == len(evaluate.read_labelled(pair.heldout))
    mtime = (pair.finetuned / "model.safetensors").stat().st_mtime_ns
    again = make_classifier_pair(tmp_path / "pair", steps=3, progress=lambda *a: pytest.fail("trained again"))
    assert (again.finetuned / "model.safetensors").stat().st_mtime_ns == mtime


def test_bench_lossy_classifier_case_scores_original_and_restored(packages, tmp_path, capsys):
    pair = make_classifier_pair(tmp_path / "pair", steps=2, batch_size=8, heldout_rows=50)
    out = tmp_path / "report.json"
    assert bench_lossy.main(["--classifier", str(pair.base), str(pair.finetuned), str(pair.heldout), "--bits", "8",
                             "--only", "rtn-weights,hyper-delta", "--no-speed", "--quiet", "--json", str(out),
                             "--workdir", str(tmp_path / "work")]) == 0
    report = json.loads(out.read_text())
    (case,) = report["cases"]
    assert set(case["original"]) == {"accuracy", "macro_f1"}
    assert [r["label"] for r in case["rows"]] == ["rtn-weights-8", "hyper-delta-8"]
    for row in case["rows"]:
        assert set(row["quality"]) == {"accuracy", "macro_f1"}
        assert 0 < row["relative_weight_error"] < 0.05 and row["bits_per_weight"] > 0
    table = capsys.readouterr().out
    assert "| rtn-weights-8 |" in table and "macro_f1" in table
