"""Dashboard pages with the Django test client: every page renders, other teams' objects answer 404, forms call
the services with what the user entered."""

from __future__ import annotations

from unittest import mock

import modelcodecs
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.urls import reverse
from rest_framework.authtoken.models import Token

from webapp.core.exceptions import ApplicationError
from webapp.teams.selectors import team_current_for_user
from webapp.jobs.models import Job
from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair
from webapp.teams.services import membership_add, team_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def _model(team, name, user):
    return ModelEntry.objects.create(
        team=team, name=name, path=f"/srv/models/{name}", layout="safetensors", architecture="LlamaForCausalLM",
        model_type="llama", dtypes={"BF16": 10}, parameter_count=1234567, tensor_count=10, total_bytes=2469134,
        files=[{"name": "model.safetensors", "size": 2469134, "sha256": "ab" * 32}], created_by=user)


def _team_world(username, team_name):
    User = get_user_model()
    user = User.objects.create_user(username=username, password=f"{username}-password")
    team = team_create(name=team_name, owner=user)
    base, ft = _model(team, f"{username}-base", user), _model(team, f"{username}-ft", user)
    pair = Pair.objects.create(team=team, name=f"{username}-pair", base=base, finetuned=ft, created_by=user,
                               report={"shared": 10, "missing_in_base": [], "missing_in_finetuned": [],
                                       "shape_mismatch": [], "dtype_mismatch": [], "compatible": True})
    job = Job.objects.create(team=team, created_by=user, kind="compress", pair=pair, status="succeeded",
                             codec_config={"id": "zstd"}, progress=100.0, stage="done",
                             metrics={"ratio": 1.25, "mb_per_s": 321.5}, log_tail="[12:00:00] succeeded")
    name = storages["artifacts"].save(f"{team.slug}/{username}.dvz", ContentFile(b"DVZ-artifact-bytes-" + username.encode()))
    artifact = Artifact.objects.create(team=team, pair=pair, job=job, codec_id="zstd", codec_config={"id": "zstd"},
                                       storage_name=name, original_bytes=2469134, compressed_bytes=1975307,
                                       ratio=1.25, verification="verified", metrics={"mb_per_s": 321.5},
                                       perplexity=12.5)
    dataset = Dataset.objects.create(team=team, name=f"{username}-text", path="/srv/data/text.txt", size_bytes=1000,
                                     sha256="cd" * 32, created_by=user)
    # an evaluate job scored the artifact (restored) beside the fine-tune (original, cached on the model)
    original, restored = {"perplexity": 12.0, "top1_accuracy": 0.4}, {"perplexity": 12.5, "top1_accuracy": 0.39}
    artifact.quality = {str(dataset.pk): {"dataset": dataset.name, "kind": "text", "original": original,
                                          "restored": restored, "delta": {"perplexity": 0.5, "top1_accuracy": -0.01}}}
    artifact.save()
    ft.scores = {f"{dataset.pk}:{dataset.sha256}:{{}}": original}
    ft.save()
    queued = Job.objects.create(team=team, created_by=user, kind="compress", pair=pair, codec_config={"id": "zstd"})
    return {"user": user, "team": team, "base": base, "ft": ft, "pair": pair, "job": job, "artifact": artifact,
            "dataset": dataset, "queued": queued}


@pytest.fixture
def alice():
    return _team_world("alice", "Acme")


@pytest.fixture
def bob():
    return _team_world("bob", "Other")


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice["user"])
    return client


def test_anonymous_users_are_sent_to_login(client):
    response = client.get(reverse("dashboard:pair_list"))
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")
    login = client.get("/login/")
    assert login.status_code == 200
    assert b'name="username"' in login.content


def test_login_with_password(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "alice-password"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:pair_list")).status_code == 200


def test_healthz(client):
    assert client.get("/healthz/").content == b"ok"


@pytest.mark.parametrize("name, obj", [
    ("pair_list", None), ("model_list", None), ("dataset_list", None), ("job_list", None), ("job_new", None),
    ("tokens", None), ("team_new", None), ("pair_detail", "pair"), ("model_detail", "base"), ("job_detail", "job"),
    ("job_detail", "queued"),
])
def test_pages_render(client_alice, alice, name, obj):
    url = reverse(f"dashboard:{name}", args=[alice[obj].pk] if obj else [])
    response = client_alice.get(url)
    assert response.status_code == 200, response.content[:500]
    assert b"DeltaVault" in response.content


def test_pair_page_compares_codecs_and_plots(client_alice, alice):
    html = client_alice.get(reverse("dashboard:pair_detail", args=[alice["pair"].pk])).content.decode()
    assert "Which artifact should we keep?" in html
    assert "1.250×" in html            # ratio
    assert "321.5" in html             # MB/s
    assert ">12.800<" in html          # bits per weight: 8 x 1975307 / 1234567
    assert "perplexity 12.0000 → 12.5000 (+0.5000)" in html   # original -> restored (delta)
    assert ">verified<" in html
    assert "<svg" in html and "<circle" in html
    # 12.5 is 4.2 % above 12.0: outside the default 1 % tolerance, inside a 5 % one
    assert "No artifact is within the tolerance" in html
    url = reverse("dashboard:pair_detail", args=[alice["pair"].pk])
    html = client_alice.get(url + "?tolerance_pct=5").content.decode()
    assert 'class="best recommended within"' in html and 'class="recommended"' in html
    assert f'data-ws="/ws/teams/{alice["team"].slug}/jobs/"' in html


def test_job_pages_subscribe_to_their_socket(client_alice, alice):
    html = client_alice.get(reverse("dashboard:job_detail", args=[alice["queued"].pk])).content.decode()
    assert f'data-ws="/ws/jobs/{alice["queued"].pk}/"' in html
    assert 'data-action="cancel"' in html
    html = client_alice.get(reverse("dashboard:job_list")).content.decode()
    assert f'data-job-id="{alice["queued"].pk}"' in html
    assert 'class="progress' in html


@pytest.mark.parametrize("name, obj", [("pair_detail", "pair"), ("model_detail", "base"), ("job_detail", "job"),
                                       ("artifact_download", "artifact")])
def test_other_teams_objects_are_404(client_alice, alice, bob, name, obj):
    assert client_alice.get(reverse(f"dashboard:{name}", args=[bob[obj].pk])).status_code == 404


def test_other_teams_jobs_cannot_be_cancelled_or_retried(client_alice, alice, bob):
    for name in ("job_cancel", "job_retry"):
        assert client_alice.post(reverse(f"dashboard:{name}", args=[bob["queued"].pk])).status_code == 404
    bob["queued"].refresh_from_db()
    assert bob["queued"].status == "queued"


def test_other_teams_objects_do_not_appear_in_lists(client_alice, alice, bob):
    for name in ("pair_list", "model_list", "dataset_list", "job_list"):
        html = client_alice.get(reverse(f"dashboard:{name}")).content.decode()
        assert "bob-" not in html, name


def test_artifact_download_streams_the_file(client_alice, alice):
    response = client_alice.get(reverse("dashboard:artifact_download", args=[alice["artifact"].pk]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"DVZ-artifact-bytes-alice"
    assert "attachment" in response["Content-Disposition"] and ".dvz" in response["Content-Disposition"]


def test_team_switch_keeps_the_choice_and_refuses_other_teams(client_alice, alice, bob):
    second = team_create(name="Second", owner=alice["user"])
    response = client_alice.post(reverse("dashboard:team_switch"), {"team": second.slug, "next": "/models/"})
    assert response.status_code == 302 and response["Location"] == "/models/"
    assert team_current_for_user(user=alice["user"]) == second
    assert "alice-base" not in client_alice.get("/models/").content.decode()   # the new team has no models
    assert client_alice.post(reverse("dashboard:team_switch"), {"team": bob["team"].slug}).status_code == 404
    # Leaving an object page for another team goes to the home page, not to an object of the old team.
    response = client_alice.post(reverse("dashboard:team_switch"), {"team": alice["team"].slug,
                                                                   "next": f"/pairs/{alice['pair'].pk}/"})
    assert response["Location"] == reverse("dashboard:home")


def test_user_without_team_is_asked_to_create_one(client):
    user = get_user_model().objects.create_user(username="solo", password="solo-password")
    client.force_login(user)
    assert client.get(reverse("dashboard:pair_list"))["Location"] == reverse("dashboard:team_new")
    response = client.post(reverse("dashboard:team_new"), {"name": "Solo Lab"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:pair_list")).status_code == 200
    assert team_current_for_user(user=user).slug == "solo-lab"


def test_model_register_from_path_calls_the_service(client_alice, alice):
    with mock.patch("webapp.dashboard.views.model_register_from_path", return_value=alice["base"]) as service:
        response = client_alice.post(reverse("dashboard:model_list"),
                                     {"source": "path", "path-name": "llama-ft", "path-path": "/srv/models/x"})
    assert response.status_code == 302
    service.assert_called_once_with(team=alice["team"], user=alice["user"], name="llama-ft", path="/srv/models/x",
                                    store_compressed=False)


def test_service_errors_are_shown_in_the_page(client_alice, alice):
    error = ApplicationError("The path is outside the allowed model folders.")
    with mock.patch("webapp.dashboard.views.model_register_from_path", side_effect=error):
        response = client_alice.post(reverse("dashboard:model_list"),
                                     {"source": "path", "path-name": "x", "path-path": "/etc"})
    assert response.status_code == 200
    assert "outside the allowed model folders" in response.content.decode()


def test_model_upload_calls_the_service_with_the_files(client_alice, alice):
    from django.core.files.uploadedfile import SimpleUploadedFile

    files = [SimpleUploadedFile("config.json", b"{}"), SimpleUploadedFile("model.safetensors", b"\0" * 16)]
    with mock.patch("webapp.dashboard.views.model_register_upload", return_value=alice["base"]) as service:
        response = client_alice.post(reverse("dashboard:model_list"),
                                     {"source": "upload", "upload-name": "up", "upload-files": files})
    assert response.status_code == 302
    kwargs = service.call_args.kwargs
    assert kwargs["name"] == "up" and sorted(f.name for f in kwargs["files"]) == ["config.json", "model.safetensors"]


def test_pair_create_calls_the_service(client_alice, alice):
    with mock.patch("webapp.dashboard.views.pair_create", return_value=alice["pair"]) as service:
        response = client_alice.post(reverse("dashboard:pair_list"), {
            "name": "new-pair", "base": alice["base"].pk, "finetuned": alice["ft"].pk})
    assert response.status_code == 302
    service.assert_called_once_with(team=alice["team"], user=alice["user"], name="new-pair", base=alice["base"],
                                    finetuned=alice["ft"])


def test_pair_form_offers_only_the_teams_models(client_alice, alice, bob):
    response = client_alice.post(reverse("dashboard:pair_list"), {
        "name": "sneaky", "base": bob["base"].pk, "finetuned": alice["ft"].pk})
    assert response.status_code == 200
    assert not Pair.objects.filter(name="sneaky").exists()


def test_dataset_register_calls_the_service(client_alice, alice):
    with mock.patch("webapp.dashboard.views.dataset_register_from_path", return_value=alice["dataset"]) as service:
        client_alice.post(reverse("dashboard:dataset_list"),
                          {"source": "path", "path-name": "wiki", "path-path": "/srv/data/wiki.txt"})
    service.assert_called_once_with(team=alice["team"], user=alice["user"], name="wiki", path="/srv/data/wiki.txt",
                                    kind="text")


def _first_codec_with_an_integer_option():
    for cls in modelcodecs.list_codecs():
        for name, prop in cls.config_schema()["properties"].items():
            # a codec that trains while compressing (bitdelta) also needs a dataset: not this test's subject
            if prop["type"] == "integer" and cls.input_kind == "weights" and not cls().calibration_tokens():
                return cls, name, prop
    pytest.skip("no registered codec has an integer option")


def test_job_form_has_fields_from_every_codec_schema(client_alice):
    html = client_alice.get(reverse("dashboard:job_new")).content.decode()
    for cls in modelcodecs.list_codecs():
        if cls.input_kind != "weights":
            continue
        assert f'data-codec="{cls.codec_id}"' in html
        for param in cls.config_schema()["properties"]:
            assert f'name="cfg__{cls.codec_id}__{param}"' in html


def test_job_form_submits_a_compress_job_with_the_codec_options(client_alice, alice):
    cls, param, prop = _first_codec_with_an_integer_option()
    value = int(prop.get("minimum") or prop["default"] or 1)
    before = set(Job.objects.values_list("pk", flat=True))
    response = client_alice.post(reverse("dashboard:job_new"), {
        "kind": "compress", "pair": alice["pair"].pk, "codec": cls.codec_id, "queue": "cpu",
        f"cfg__{cls.codec_id}__{param}": value})
    assert response.status_code == 302, response.content.decode()[:2000]
    (new_id,) = set(Job.objects.values_list("pk", flat=True)) - before
    job = Job.objects.get(pk=new_id)
    assert response["Location"] == reverse("dashboard:job_detail", args=[job.pk])
    assert (job.kind, job.status, job.pair_id, job.team_id) == ("compress", "queued", alice["pair"].pk, alice["team"].pk)
    assert job.codec_config["id"] == cls.codec_id
    assert job.codec_config[param] == value


def test_job_form_rejects_out_of_range_options_without_creating_a_job(client_alice, alice):
    cls, param, prop = _first_codec_with_an_integer_option()
    if prop.get("minimum") is None:
        pytest.skip("option has no minimum")
    count = Job.objects.count()
    response = client_alice.post(reverse("dashboard:job_new"), {
        "kind": "compress", "pair": alice["pair"].pk, "codec": cls.codec_id, "queue": "cpu",
        f"cfg__{cls.codec_id}__{param}": int(prop["minimum"]) - 1})
    assert response.status_code == 200
    assert Job.objects.count() == count


def test_job_form_passes_decompress_and_evaluate_inputs(client_alice, alice):
    with mock.patch("webapp.dashboard.views.job_submit", return_value=alice["job"]) as service:
        client_alice.post(reverse("dashboard:job_new"), {"kind": "decompress", "artifact": alice["artifact"].pk,
                                                         "queue": "cpu", "threads": 2})
        client_alice.post(reverse("dashboard:job_new"), {"kind": "evaluate", "artifact": alice["artifact"].pk,
                                                         "dataset": alice["dataset"].pk, "queue": "gpu"})
    first, second = service.call_args_list
    assert first.kwargs == {"team": alice["team"], "user": alice["user"], "kind": "decompress", "queue": "cpu",
                            "options": {"threads": 2}, "artifact": alice["artifact"]}
    assert second.kwargs == {"team": alice["team"], "user": alice["user"], "kind": "evaluate", "queue": "gpu",
                             "dataset": alice["dataset"], "artifact": alice["artifact"]}


def test_cancel_and_retry_buttons(client_alice, alice):
    queued = alice["queued"]
    queued.celery_task_id = ""
    queued.save(update_fields=["celery_task_id"])
    response = client_alice.post(reverse("dashboard:job_cancel", args=[queued.pk]))
    assert response.status_code == 302
    queued.refresh_from_db()
    assert queued.status == "cancelled"
    response = client_alice.post(reverse("dashboard:job_retry", args=[queued.pk]))
    retry = Job.objects.get(retry_of=queued)
    assert response["Location"] == reverse("dashboard:job_detail", args=[retry.pk])
    assert retry.status == "queued" and retry.codec_config["id"] == queued.codec_config["id"]


def test_cancel_of_a_finished_job_shows_the_reason(client_alice, alice):
    response = client_alice.post(reverse("dashboard:job_cancel", args=[alice["job"].pk]), follow=True)
    assert "already succeeded" in response.content.decode()


def test_viewer_cannot_submit_jobs(client, alice):
    viewer = get_user_model().objects.create_user(username="vera", password="vera-password")
    membership_add(team=alice["team"], user=viewer, role="viewer")
    client.force_login(viewer)
    count = Job.objects.count()
    response = client.post(reverse("dashboard:job_new"), {"kind": "decompress", "artifact": alice["artifact"].pk,
                                                          "queue": "cpu"})
    assert response.status_code == 200
    assert Job.objects.count() == count
    assert "viewers can only read" in response.content.decode()


def test_api_token_create_and_revoke(client_alice, alice):
    assert "no API token" in client_alice.get(reverse("dashboard:tokens")).content.decode()
    client_alice.post(reverse("dashboard:tokens"), {"action": "create"})
    token = Token.objects.get(user=alice["user"])
    assert token.key in client_alice.get(reverse("dashboard:tokens")).content.decode()
    client_alice.post(reverse("dashboard:tokens"), {"action": "create"})
    replaced = Token.objects.get(user=alice["user"])
    assert replaced.key != token.key
    client_alice.post(reverse("dashboard:tokens"), {"action": "revoke"})
    assert not Token.objects.filter(user=alice["user"]).exists()
