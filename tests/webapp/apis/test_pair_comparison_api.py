"""GET /api/v1/pairs/<id>/comparison/: the pair page's answer over REST."""

import pytest
from rest_framework.authtoken.models import Token

from tests.factories import artifact_create, dataset_create, model_entry_create, pair_create

pytestmark = pytest.mark.django_db


class PairComparisonApiTests:
    def test_rows_front_and_recommendation_with_a_tolerance(self, world, api_client):
        team = world["acme"]
        pair = pair_create(team=team, finetuned=model_entry_create(team=team, parameter_count=2000))
        dataset = dataset_create(team=team, sha256="ab" * 32)
        pair.finetuned.scores = {f"{dataset.pk}:{dataset.sha256}:{{}}": {"perplexity": 8.0}}
        pair.finetuned.save()
        quality = {str(dataset.pk): {"original": {"perplexity": 8.0}, "restored": {"perplexity": 8.2},
                                     "delta": {"perplexity": 0.2}}}
        lossy = artifact_create(team=team, pair=pair, codec_id="hyper", compressed_bytes=1000, quality=quality,
                                codec_config={"id": "hyper", "n": 255, "M": 3, "l": 0.1})
        token, _ = Token.objects.get_or_create(user=world["victor"])  # a viewer may read
        api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        url = f"/api/v1/pairs/{pair.pk}/comparison/"
        body = api_client.get(url).json()
        assert body["metric"] == "perplexity" and body["dataset"]["id"] == dataset.pk
        row = body["rows"][0]
        assert row["codec"] == "hyper" and row["options"] == {"n": 255}  # l and M are the defaults
        assert row["bits_per_weight"] == 4.0
        assert row["changes"] == [{"metric": "perplexity", "original": 8.0, "restored": 8.2, "delta": 0.2}]
        assert body["pareto"] == [lossy.pk] and body["recommended"] is None  # +2.5 % > 1 %
        body = api_client.get(url, {"tolerance_pct": 3, "dataset": dataset.pk}).json()
        assert body["recommended"] == lossy.pk and body["tolerance"]["perplexity_pct"] == 3.0
        bad = api_client.get(url, {"tolerance_pct": -1})
        assert bad.status_code == 400
