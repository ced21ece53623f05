"""pair_comparison: one row per artifact with bits per weight and quality original -> restored, the Pareto front,
the artifacts within a tolerance and the smallest of them; lossless artifacts take the original's quality."""

import pytest

from tests.factories import artifact_create, dataset_create, model_entry_create, pair_create, team_create
from webapp.registry.models import Dataset
from webapp.registry.selectors import pair_comparison

pytestmark = pytest.mark.django_db


def _world(kind="text"):
    team = team_create()
    pair = pair_create(team=team, finetuned=model_entry_create(team=team, parameter_count=1000))
    dataset = dataset_create(team=team, kind=kind, sha256="ab" * 32)
    return team, pair, dataset


def _artifact(team, pair, dataset, codec, size, restored, original, lossless=False):
    return artifact_create(team=team, pair=pair, codec_id=codec, codec_config={"id": codec},
                           compressed_bytes=size, ratio=4000 / size, metrics={"lossless": lossless},
                           quality={} if restored is None else {str(dataset.pk): {
                               "original": original, "restored": restored,
                               "delta": {k: restored[k] - original[k] for k in restored}}})


class PairComparisonTests:
    def test_perplexity_front_tolerance_and_recommendation(self):
        team, pair, dataset = _world()
        original = {"perplexity": 10.0}
        pair.finetuned.scores = {f"{dataset.pk}:{dataset.sha256}:{{}}": original}
        pair.finetuned.save()
        lossless = _artifact(team, pair, dataset, "fmdelta", 3000, None, original, lossless=True)
        small_bad = _artifact(team, pair, dataset, "rtn", 400, {"perplexity": 12.0}, original)
        mid_good = _artifact(team, pair, dataset, "hyper", 700, {"perplexity": 10.05}, original)
        dominated = _artifact(team, pair, dataset, "rtn", 900, {"perplexity": 10.5}, original)
        view = pair_comparison(pair=pair)
        assert view["dataset"] == dataset and view["metric"] == "perplexity"
        rows = {r["artifact_id"]: r for r in view["rows"]}
        assert rows[mid_good.pk]["bits_per_weight"] == 8 * 700 / 1000
        assert rows[mid_good.pk]["changes"] == [{"metric": "perplexity", "original": 10.0, "restored": 10.05,
                                                 "delta": pytest.approx(0.05)}]
        assert rows[lossless.pk]["score"] == 10.0  # a lossless artifact has the original's quality
        assert set(view["pareto"]) == {lossless.pk, small_bad.pk, mid_good.pk}
        assert set(view["within"]) == {lossless.pk, mid_good.pk} and view["recommended"] == mid_good.pk
        wide = pair_comparison(pair=pair, tolerance_pct=25.0)
        assert wide["recommended"] == small_bad.pk
        assert dominated.pk not in wide["pareto"]

    def test_accuracy_tolerance_is_in_points_and_higher_is_better(self):
        team, pair, dataset = _world(kind=Dataset.Kind.LABELLED)
        original = {"accuracy": 0.900, "macro_f1": 0.88}
        a = _artifact(team, pair, dataset, "rtn", 400, {"accuracy": 0.890, "macro_f1": 0.87}, original)
        b = _artifact(team, pair, dataset, "hyper", 600, {"accuracy": 0.897, "macro_f1": 0.88}, original)
        view = pair_comparison(pair=pair, dataset=dataset, tolerance_points=0.5)
        assert view["metric"] == "accuracy" and view["higher_is_better"]
        assert view["original"] is None and view["within"] == []  # the fine-tune itself was never scored
        pair.finetuned.scores = {f"{dataset.pk}:{dataset.sha256}:{{}}": original}
        pair.finetuned.save()
        view = pair_comparison(pair=pair, dataset=dataset, tolerance_points=0.5)
        assert view["within"] == [b.pk] and view["recommended"] == b.pk
        assert set(view["pareto"]) == {a.pk, b.pk}
        assert pair_comparison(pair=pair, dataset=dataset, tolerance_points=1.0)["recommended"] == a.pk

    def test_no_evaluations_no_metric(self):
        team, pair, dataset = _world()
        artifact_create(team=team, pair=pair)
        view = pair_comparison(pair=pair)
        assert view["metric"] is None and view["pareto"] == [] and view["recommended"] is None
        assert len(view["rows"]) == 1 and view["rows"][0]["score"] is None
