"""GET /api/v1/storage/: the current team's breakdown (or ?team=), other teams' 404, in the OpenAPI schema."""

import pytest

from tests.webapp.storage_world import EXPECTED_MODELS, EXPECTED_TOTALS, storage_world_build

pytestmark = pytest.mark.django_db

URL = "/api/v1/storage/"


@pytest.fixture
def built(world):
    return storage_world_build(team=world["acme"], other=world["other"])


class StorageBreakdownApiTests:
    def test_the_current_teams_breakdown(self, world, built, as_user):
        response = as_user(world["victor"]).get(URL)  # a viewer reads it too
        assert response.status_code == 200
        body = response.json()
        assert body["team"] == "acme"
        assert {k: body["totals"][k] for k in EXPECTED_TOTALS} == EXPECTED_TOTALS
        assert {m["name"]: (m["logical_bytes"], m["on_disk_bytes"], m["own_bytes"], m["shared_bytes"], m["held"])
                for m in body["models"]} == EXPECTED_MODELS
        assert [d["term"] for d in body["definitions"]] == ["logical bytes", "bytes on disk", "saved", "ratio",
                                                            "shared"]
        assert body["restored"][0]["expires_at"] and body["gradient_sets"][0]["artifacts"][0]["codec"] == "lmgc"

    def test_team_by_slug_and_other_teams_look_missing(self, world, built, as_user):
        assert as_user(world["bob"]).get(URL).json()["team"] == "other"
        assert as_user(world["bob"]).get(URL).json()["totals"]["on_disk_bytes"] == 999 + 4000
        assert as_user(world["alice"]).get(URL, {"team": "other"}).status_code == 404
        assert as_user(world["alice"]).get(URL, {"team": "acme"}).json()["team"] == "acme"

    def test_needs_authentication(self, api_client):
        assert api_client.get(URL).status_code == 401

    def test_in_the_openapi_schema(self, world, api_client):
        schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        operation = schema["paths"]["/api/v1/storage/"]["get"]
        assert operation["operationId"] == "storage_breakdown"
        assert "StorageModel" in schema["components"]["schemas"]
