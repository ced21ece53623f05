"""Every REST endpoint: authentication, the happy path, team isolation (another team's ids answer 404) and
roles (viewers get 403 on writes)."""

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from tests.factories import artifact_create, dataset_create, job_create, pair_create, tiny_model_write
from webapp.jobs.models import Job
from webapp.registry.models import Dataset, ModelEntry, Pair

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("task")]

API = "/api/v1"


@pytest.fixture
def acme_things(world, dv_dirs):
    """One of everything in team acme (rows only; files where an endpoint reads them)."""
    team = world["acme"]
    pair = pair_create(team=team)
    artifact = artifact_create(team=team, pair=pair)
    path = dv_dirs["artifacts"] / artifact.storage_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"DVZ artifact bytes")
    dataset = dataset_create(team=team)
    job = job_create(team=team, pair=pair, status=Job.Status.FAILED)
    return {"pair": pair, "model": pair.base, "artifact": artifact, "dataset": dataset, "job": job}


def _upload(name="model.safetensors", content=b"x"):
    return SimpleUploadedFile(name, content)


# (method, url template, body) for every endpoint that touches one of acme's things.
def _acme_requests(t):
    return [
        ("get", "/teams/acme/", None),
        ("post", "/teams/acme/invitations/", {"username": "bob", "role": "member"}),
        ("patch", "/teams/acme/members/mallory/", {"role": "viewer"}),
        ("delete", "/teams/acme/members/alice/", None),
        ("get", f"/models/{t['model'].pk}/", None),
        ("get", "/models/?team=acme", None),
        ("post", "/models/", {"team": "acme", "name": "x", "path": "tiny-base"}),
        ("post", "/models/upload/", {"team": "acme", "name": "x", "files": [_upload()]}),
        ("get", f"/pairs/{t['pair'].pk}/", None),
        ("get", f"/pairs/{t['pair'].pk}/comparison/", None),
        ("get", "/pairs/?team=acme", None),
        ("post", "/pairs/", {"team": "acme", "name": "x", "base": t["model"].pk,
                             "finetuned": t["pair"].finetuned.pk}),
        ("post", "/pairs/", {"team": "other", "name": "x", "base": t["model"].pk,
                             "finetuned": t["pair"].finetuned.pk}),
        ("get", f"/datasets/{t['dataset'].pk}/", None),
        ("get", "/datasets/?team=acme", None),
        ("post", "/datasets/", {"team": "acme", "name": "x", "path": "a.txt"}),
        ("post", "/datasets/upload/", {"team": "acme", "name": "x", "file": _upload("a.txt")}),
        ("get", f"/artifacts/{t['artifact'].pk}/", None),
        ("get", f"/artifacts/{t['artifact'].pk}/download/", None),
        ("post", "/artifacts/import/", {"team": "acme", "pair": t["pair"].pk, "file": _upload("a.dvz")}),
        ("get", "/artifacts/?team=acme", None),
        ("get", f"/jobs/{t['job'].pk}/", None),
        ("get", "/jobs/?team=acme", None),
        ("post", f"/jobs/{t['job'].pk}/cancel/", None),
        ("post", f"/jobs/{t['job'].pk}/retry/", None),
        ("post", "/jobs/", {"team": "acme", "kind": "compress", "pair": t["pair"].pk, "codec_config": "zstd"}),
        ("post", "/jobs/", {"team": "other", "kind": "compress", "pair": t["pair"].pk, "codec_config": "zstd"}),
        ("post", "/jobs/", {"team": "other", "kind": "decompress", "artifact": t["artifact"].pk}),
        ("post", "/jobs/", {"team": "other", "kind": "evaluate", "model": t["model"].pk,
                            "dataset": t["dataset"].pk}),
        ("post", f"/models/{t['model'].pk}/rescan/", None),
        ("post", f"/jobs/{t['job'].pk}/pin/", {"pinned": True}),
        ("delete", f"/jobs/{t['job'].pk}/", None),
        ("delete", f"/artifacts/{t['artifact'].pk}/", None),
        ("delete", f"/datasets/{t['dataset'].pk}/", None),
        ("delete", f"/pairs/{t['pair'].pk}/?with_artifacts=true", None),
        ("delete", f"/models/{t['model'].pk}/?with_artifacts=true", None),
    ]


def _send(client, method, url, body):
    multipart = body is not None and any(isinstance(v, SimpleUploadedFile) or isinstance(v, list)
                                         for v in body.values())
    kwargs = {"format": "multipart" if multipart else "json"} if body is not None else {}
    return getattr(client, method)(API + url, body, **kwargs) if body is not None else \
        getattr(client, method)(API + url)


class CrossTeamTests:
    def test_every_endpoint_answers_404_for_another_teams_things(self, world, acme_things, as_user):
        client = as_user(world["bob"])
        counts = (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count(), Job.objects.count())
        for method, url, body in _acme_requests(acme_things):
            response = _send(client, method, url, body)
            assert response.status_code == 404, (method, url, response.status_code, response.content[:300])
            assert set(response.json()) == {"message", "extra"}, url
        assert counts == (ModelEntry.objects.count(), Pair.objects.count(), Dataset.objects.count(),
                          Job.objects.count())
        acme_things["job"].refresh_from_db()
        assert not acme_things["job"].cancel_requested

    def test_lists_without_a_team_show_only_your_teams(self, world, acme_things, as_user):
        client = as_user(world["bob"])
        mine = job_create(team=world["other"])
        for url in ("/models/", "/pairs/", "/datasets/", "/artifacts/"):
            assert client.get(API + url).json()["results"] == [], url
        assert [j["id"] for j in client.get(API + "/jobs/").json()["results"]] == [mine.pk]
        assert [t["slug"] for t in client.get(API + "/teams/").json()] == ["other"]


class AuthTests:
    def test_token_for_good_credentials_only(self, world, api_client):
        response = api_client.post(API + "/auth/token/", {"username": "alice", "password": "pw-test-123"})
        assert response.status_code == 200
        assert response.json()["token"] == Token.objects.get(user=world["alice"]).key
        bad = api_client.post(API + "/auth/token/", {"username": "alice", "password": "nope"})
        assert bad.status_code == 400 and "credentials" in bad.json()["message"]

    def test_every_endpoint_needs_authentication(self, world, acme_things, api_client):
        for method, url, body in _acme_requests(acme_things) + [("get", "/codecs/", None), ("get", "/teams/", None)]:
            response = _send(api_client, method, url, body)
            assert response.status_code == 401, (method, url, response.status_code)

    def test_session_authentication_works_too(self, world, api_client):
        api_client.force_login(world["alice"])
        assert api_client.get(API + "/teams/").status_code == 200


class ViewerTests:
    def test_viewers_get_403_on_every_write(self, world, acme_things, as_user, dv_dirs):
        client = as_user(world["victor"])
        t = acme_things
        writes = [r for r in _acme_requests(t) if r[0] != "get" and "other" not in str(r[2])]
        assert len(writes) >= 10
        for method, url, body in writes:
            response = _send(client, method, url, body)
            assert response.status_code == 403, (method, url, response.status_code, response.content[:300])
            assert response.json()["message"], url
        t["job"].refresh_from_db()
        assert t["job"].status == Job.Status.FAILED and Job.objects.count() == 1

    def test_viewers_can_read(self, world, acme_things, as_user):
        client = as_user(world["victor"])
        for method, url, body in _acme_requests(acme_things):
            if method == "get":
                assert _send(client, method, url, body).status_code == 200, url

    def test_members_cannot_manage_members(self, world, as_user):
        client = as_user(world["mallory"])
        assert client.post(API + "/teams/acme/invitations/", {"username": "bob"}).status_code == 403
        assert client.get(API + "/teams/acme/invitations/").status_code == 403
        assert client.patch(API + "/teams/acme/members/victor/", {"role": "admin"}).status_code == 403


class TeamApiTests:
    def test_create_list_detail_members(self, world, as_user):
        client = as_user(world["alice"])
        created = client.post(API + "/teams/", {"name": "New Lab"})
        assert created.status_code == 201 and created.json()["slug"] == "new-lab"
        assert created.json()["role"] == "admin"
        assert sorted(t["slug"] for t in client.get(API + "/teams/").json()) == ["acme", "new-lab"]
        invited = client.post(API + "/teams/new-lab/invitations/", {"username": "bob", "role": "viewer"})
        assert invited.status_code == 201 and invited.json()["status"] == "pending"
        assert as_user(world["bob"]).post(API + f"/invitations/{invited.json()['id']}/accept/").status_code == 200
        client = as_user(world["alice"])
        detail = client.get(API + "/teams/new-lab/").json()
        assert {m["username"]: m["role"] for m in detail["members"]} == {"alice": "admin", "bob": "viewer"}
        assert client.patch(API + "/teams/new-lab/members/bob/", {"role": "member"}).json()["role"] == "member"
        assert client.delete(API + "/teams/new-lab/members/bob/").status_code == 204
        assert client.post(API + "/teams/", {"name": "New Lab"}).status_code == 400


class ModelApiTests:
    def test_register_from_path_and_read_back(self, world, as_user, tiny_pair_dirs):
        client = as_user(world["mallory"])
        response = client.post(API + "/models/", {"team": "acme", "name": "base", "path": "tiny-base"},
                               format="json")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["tensor_count"] == 4 and body["team"] == "acme" and body["layout"] == "safetensors"
        assert client.get(API + f"/models/{body['id']}/").json() == body
        page = client.get(API + "/models/?limit=1").json()
        assert page["count"] == 1 and page["results"][0]["id"] == body["id"]

    def test_team_is_optional_for_a_user_in_one_team(self, world, as_user, dv_dirs):
        tiny_model_write(dv_dirs["root"] / "other" / "tiny-base")
        response = as_user(world["bob"]).post(API + "/models/", {"name": "b", "path": "tiny-base"})
        assert response.status_code == 201 and response.json()["team"] == "other"

    @pytest.mark.parametrize("path", ["/etc", "../x", "tiny-base/../../x", "escape"])
    def test_paths_outside_the_roots_are_refused(self, world, as_user, tiny_pair_dirs, dv_dirs, path):
        os.symlink("/etc", dv_dirs["acme"] / "escape")
        response = as_user(world["alice"]).post(API + "/models/", {"team": "acme", "name": "m", "path": path})
        assert response.status_code == 400
        assert "not inside your team's folders" in response.json()["message"] or "'..'" in response.json()["message"]
        assert not ModelEntry.objects.exists()

    def test_upload(self, world, as_user, tiny_pair_dirs):
        base_dir = tiny_pair_dirs[0]
        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(base_dir.iterdir())]
        response = as_user(world["alice"]).post(API + "/models/upload/",
                                                {"team": "acme", "name": "up", "files": files}, format="multipart")
        assert response.status_code == 201, response.json()
        assert response.json()["source"] == "upload" and response.json()["tensor_count"] == 4

    def test_upload_of_a_disallowed_file_type_is_refused(self, world, as_user, tiny_pair_dirs):
        base_dir = tiny_pair_dirs[0]
        files = [SimpleUploadedFile(p.name, p.read_bytes()) for p in sorted(base_dir.iterdir())]
        files.append(SimpleUploadedFile("pytorch_model.bin", b"\x80\x02pickle"))
        response = as_user(world["alice"]).post(API + "/models/upload/",
                                                {"team": "acme", "name": "up", "files": files}, format="multipart")
        assert response.status_code == 400 and "not accepted" in response.json()["message"]
        assert not ModelEntry.objects.exists()

    def test_validation_errors_have_the_message_shape(self, world, as_user):
        response = as_user(world["alice"]).post(API + "/models/", {"team": "acme"}, format="json")
        assert response.status_code == 400
        assert response.json()["message"].startswith("name:")
        assert "path" in response.json()["extra"]["fields"]


class PairDatasetApiTests:
    def test_pair_create_list_detail(self, world, as_user, tiny_pair_dirs):
        client = as_user(world["alice"])
        base = client.post(API + "/models/", {"name": "b", "path": "tiny-base"}).json()
        ft = client.post(API + "/models/", {"name": "f", "path": "tiny-ft"}).json()
        response = client.post(API + "/pairs/", {"name": "p", "base": base["id"], "finetuned": ft["id"]})
        assert response.status_code == 201, response.json()
        pair = response.json()
        assert pair["base"] == {"id": base["id"], "name": "b"} and pair["report"]["compatible"] is True
        assert client.get(API + f"/pairs/{pair['id']}/").json() == pair
        assert client.get(API + f"/pairs/?model={ft['id']}").json()["count"] == 1
        assert client.get(API + "/pairs/?model=999999").json()["count"] == 0

    def test_dataset_register_upload_list(self, world, as_user, dv_dirs):
        client = as_user(world["alice"])
        (dv_dirs["acme"] / "wiki.txt").write_text("some text\n")
        made = client.post(API + "/datasets/", {"name": "wiki", "path": "wiki.txt"})
        assert made.status_code == 201 and made.json()["size_bytes"] == 10
        up = client.post(API + "/datasets/upload/", {"name": "up", "file": SimpleUploadedFile("u.txt", b"abc")},
                         format="multipart")
        assert up.status_code == 201, up.json()
        assert client.get(API + "/datasets/").json()["count"] == 2
        assert client.get(API + f"/datasets/{up.json()['id']}/").json()["sha256"] == up.json()["sha256"]
        bad = client.post(API + "/datasets/upload/", {"name": "bin", "file": SimpleUploadedFile("a.exe", b"MZ")},
                          format="multipart")
        assert bad.status_code == 400


class ArtifactApiTests:
    def test_list_detail_download(self, world, acme_things, as_user):
        client = as_user(world["victor"])
        artifact = acme_things["artifact"]
        listed = client.get(API + "/artifacts/").json()
        assert [a["id"] for a in listed["results"]] == [artifact.pk]
        detail = client.get(API + f"/artifacts/{artifact.pk}/").json()
        assert detail["ratio"] == 2.0 and detail["download_url"].endswith(f"/artifacts/{artifact.pk}/download/")
        download = client.get(detail["download_url"])
        assert download.status_code == 200
        assert b"".join(download.streaming_content) == b"DVZ artifact bytes"
        assert "attachment" in download["Content-Disposition"] and ".dvz" in download["Content-Disposition"]

    def test_filters(self, world, acme_things, as_user):
        client = as_user(world["alice"])
        assert client.get(API + "/artifacts/?codec=zstd").json()["count"] == 1
        assert client.get(API + "/artifacts/?codec=fmdelta").json()["count"] == 0
        assert client.get(API + f"/artifacts/?pair={acme_things['pair'].pk}").json()["count"] == 1


class JobApiTests:
    def test_submit_list_detail_cancel_retry(self, world, acme_things, as_user, task,
                                             django_capture_on_commit_callbacks):
        client = as_user(world["mallory"])
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(API + "/jobs/", {"kind": "compress", "pair": acme_things["pair"].pk,
                                                    "codec_config": {"id": "zstd"}, "options": {"threads": 1}},
                                   format="json")
        assert response.status_code == 201, response.json()
        job = response.json()
        assert job["status"] == "queued" and job["codec"] == "zstd" and job["team"] == "acme"
        task.apply_async.assert_called_once()
        assert client.get(API + f"/jobs/{job['id']}/").json()["id"] == job["id"]
        cancelled = client.post(API + f"/jobs/{job['id']}/cancel/")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = client.post(API + f"/jobs/{job['id']}/cancel/")
        assert again.status_code == 400 and "already" in again.json()["message"]
        retried = client.post(API + f"/jobs/{job['id']}/retry/")
        assert retried.status_code == 201 and retried.json()["retry_of_id"] == job["id"]

    def test_bad_codec_config_is_a_400_and_creates_nothing(self, world, acme_things, as_user):
        response = as_user(world["alice"]).post(
            API + "/jobs/", {"kind": "compress", "pair": acme_things["pair"].pk,
                             "codec_config": {"id": "zstd", "nonsense": True}}, format="json")
        assert response.status_code == 400 and "nonsense" in response.json()["message"]
        assert Job.objects.count() == 1

    def test_filters(self, world, acme_things, as_user):
        client = as_user(world["alice"])
        job_create(team=world["acme"], kind="decompress", status=Job.Status.RUNNING)
        job_create(team=world["acme"], kind="evaluate", status=Job.Status.SUCCEEDED)

        def ids(query):
            return sorted(j["id"] for j in client.get(API + "/jobs/" + query).json()["results"])

        everything = ids("")
        assert len(everything) == 3
        assert len(ids("?status=running")) == 1
        assert len(ids("?status=running&status=failed")) == 2
        assert len(ids("?kind=evaluate")) == 1
        assert ids(f"?pair={acme_things['pair'].pk}") == [acme_things["job"].pk]
        bad = client.get(API + "/jobs/?status=exploded")
        assert bad.status_code == 400
        page = client.get(API + "/jobs/?limit=2&offset=2").json()
        assert page["count"] == 3 and len(page["results"]) == 1 and page["previous"]


class CodecApiTests:
    def test_lists_codecs_with_schemas(self, world, as_user):
        codecs = as_user(world["victor"]).get(API + "/codecs/").json()
        by_id = {c["id"]: c for c in codecs}
        assert "zstd" in by_id
        zstd = by_id["zstd"]
        assert zstd["lossless"] is True and zstd["config_schema"]["type"] == "object"
        assert zstd["config_schema"]["properties"]


class SchemaTests:
    def test_schema_and_swagger_ui_are_served_locally(self, world, api_client):
        schema = api_client.get("/api/schema/")
        assert schema.status_code == 200 and b"/api/v1/jobs/" in schema.content
        docs = api_client.get("/api/docs/")
        assert docs.status_code == 200 and b"swagger-ui" in docs.content
        assert b"cdn.jsdelivr" not in docs.content and b"unpkg.com" not in docs.content
        import re

        bundle = re.search(rb'src="([^"]*swagger-ui-bundle\.js)"', docs.content).group(1).decode()
        assert bundle.startswith("/static/")
        asset = api_client.get(bundle)
        assert asset.status_code == 200

    def test_schema_generates_without_warnings(self):
        from django.core.management import call_command

        call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)
