"""REST: invitations, the current team for users in several teams, login throttling, artifact import, and errors
that are 4xx JSON (never a 500 or a debug page)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.factories import pair_create
from webapp.registry.models import Artifact
from webapp.teams.models import Invitation
from webapp.teams.selectors import membership_role

pytestmark = pytest.mark.django_db
API = "/api/v1"


class InvitationApiTests:
    def test_invite_accept_and_the_old_add_endpoint_is_gone(self, world, as_user):
        alice = as_user(world["alice"])
        # no one is added without consent: the old "add a member" call does not exist any more
        assert alice.post(API + "/teams/acme/members/", {"username": "bob"}).status_code == 404
        assert membership_role(user=world["bob"], team=world["acme"]) is None
        invited = alice.post(API + "/teams/acme/invitations/", {"username": "bob", "role": "viewer"}, format="json")
        assert invited.status_code == 201
        assert [i["username"] for i in alice.get(API + "/teams/acme/invitations/").json()] == ["bob"]
        bob = as_user(world["bob"])
        mine = bob.get(API + "/invitations/").json()
        assert [(i["team"], i["role"], i["invited_by"]) for i in mine] == [("acme", "viewer", "alice")]
        assert bob.post(API + f"/invitations/{mine[0]['id']}/accept/").json()["role"] == "viewer"
        assert membership_role(user=world["bob"], team=world["acme"]) == "viewer"

    def test_others_cannot_answer_someone_elses_invitation(self, world, as_user):
        invitation = Invitation.objects.create(team=world["other"], username="alice", invited_by=world["bob"])
        client = as_user(world["mallory"])
        for action in ("accept", "decline"):
            assert client.post(API + f"/invitations/{invitation.pk}/{action}/").status_code == 404
        assert as_user(world["alice"]).post(API + f"/invitations/{invitation.pk}/decline/").status_code == 204
        invitation.refresh_from_db()
        assert invitation.status == "declined"

    def test_nothing_tells_whether_a_username_exists(self, world, as_user):
        alice = as_user(world["alice"])
        answers = []
        for name in ("bob", "no-such-user"):
            response = alice.post(API + "/teams/acme/invitations/", {"username": name}, format="json")
            body = response.json()
            answers.append((response.status_code, sorted(body), body["status"], body["role"]))
        assert answers[0] == answers[1]
        removals = [alice.delete(API + f"/teams/acme/members/{name}/") for name in ("bob", "no-such-user")]
        assert [r.status_code for r in removals] == [404, 404]
        assert removals[0].json() == removals[1].json()
        assert "No user named" not in str(removals[0].json())

    def test_withdraw(self, world, as_user):
        alice = as_user(world["alice"])
        invitation_id = alice.post(API + "/teams/acme/invitations/", {"username": "carol"}).json()["id"]
        assert alice.delete(API + f"/teams/acme/invitations/{invitation_id}/").status_code == 204
        assert Invitation.objects.get().status == "cancelled"


class SeveralTeamsTests:
    def test_writes_without_a_team_go_to_the_current_team(self, world, as_user, dv_dirs):
        """The README's POSTs name no team: they work for a user in several teams, on the current one."""
        from tests.factories import tiny_model_write

        Invitation.objects.create(team=world["other"], username="alice", invited_by=world["bob"])
        alice = as_user(world["alice"])
        invitation_id = alice.get(API + "/invitations/").json()[0]["id"]
        alice.post(API + f"/invitations/{invitation_id}/accept/")
        tiny_model_write(dv_dirs["acme"] / "m")
        response = alice.post(API + "/models/", {"name": "m", "path": "m"}, format="json")
        assert response.status_code == 201 and response.json()["team"] == "acme"
        pair = pair_create(team=world["acme"])
        job = alice.post(API + "/jobs/", {"kind": "compress", "pair": pair.pk, "codec_config": {"id": "zstd"}},
                         format="json")
        assert job.status_code == 201, job.json()
        # naming another team still works
        other = alice.post(API + "/models/", {"team": "other", "name": "m", "path": "m"}, format="json")
        assert other.json()["message"] == "The path does not exist."  # looked up in team other's folder


class LoginThrottlingTests:
    def test_the_token_endpoint_locks_out_after_repeated_failures(self, world, api_client, settings):
        settings.AXES_FAILURE_LIMIT = 5
        for _ in range(4):
            response = api_client.post(API + "/auth/token/", {"username": "alice", "password": "wrong"})
            assert response.status_code == 400
        assert api_client.post(API + "/auth/token/", {"username": "alice", "password": "wrong"}).status_code == 429
        locked = api_client.post(API + "/auth/token/", {"username": "alice", "password": "pw-test-123"})
        assert locked.status_code == 429 and "Too many failed logins" in locked.json()["message"]
        assert int(locked["Retry-After"]) > 0

    def test_the_login_form_locks_out_after_repeated_failures(self, world, client, settings):
        settings.AXES_FAILURE_LIMIT = 5
        for _ in range(4):
            assert client.post("/login/", {"username": "mallory", "password": "wrong"}).status_code == 200
        assert client.post("/login/", {"username": "mallory", "password": "wrong"}).status_code == 429
        locked = client.post("/login/", {"username": "mallory", "password": "pw-test-123"})
        assert locked.status_code == 429 and b"Too many failed logins" in locked.content
        assert "_auth_user_id" not in client.session

    def test_a_success_resets_the_count(self, world, api_client, settings):
        settings.AXES_FAILURE_LIMIT = 3
        for _ in range(2):
            api_client.post(API + "/auth/token/", {"username": "alice", "password": "wrong"})
        assert api_client.post(API + "/auth/token/", {"username": "alice", "password": "pw-test-123"}).status_code \
            == 200
        for _ in range(2):
            api_client.post(API + "/auth/token/", {"username": "alice", "password": "wrong"})
        assert api_client.post(API + "/auth/token/", {"username": "alice", "password": "pw-test-123"}).status_code \
            == 200


class ArtifactImportApiTests:
    def test_import_a_cli_artifact(self, world, as_user, pair, tmp_path):
        import modelcodecs

        out = tmp_path / "cli.dvz"
        modelcodecs.compress_model(pair.finetuned.path, out, codec={"id": "fmdelta"}, base_dir=pair.base.path)
        response = as_user(world["mallory"]).post(
            API + "/artifacts/import/", {"pair": pair.pk, "file": SimpleUploadedFile("cli.dvz", out.read_bytes())},
            format="multipart")
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body["source"] == "import" and body["verification"] == "verified" and body["pair_id"] == pair.pk
        assert len(body["sha256"]) == 64 and body["job_id"] is None

    def test_garbage_is_a_400_and_stores_nothing(self, world, as_user, pair):
        response = as_user(world["alice"]).post(
            API + "/artifacts/import/", {"pair": pair.pk, "file": SimpleUploadedFile("x.dvz", b"junk")},
            format="multipart")
        assert response.status_code == 400 and "Not a DeltaVault artifact" in response.json()["message"]
        assert not Artifact.objects.exists()


class ErrorShapeTests:
    def test_an_unknown_api_url_is_a_json_404(self, world, as_user):
        response = as_user(world["alice"]).get(API + "/no/such/endpoint/")
        assert response.status_code == 404 and response.json() == {"message": "Not found.", "extra": {}}

    @pytest.mark.parametrize("path", ["x" * 300, "loop"])
    def test_hostile_paths_are_400(self, world, as_user, dv_dirs, path):
        import os

        os.symlink(dv_dirs["acme"] / "loop", dv_dirs["acme"] / "loop")
        response = as_user(world["alice"]).post(API + "/models/", {"name": "m", "path": path}, format="json")
        assert response.status_code == 400 and "cannot be read" in response.json()["message"]

    def test_max_tokens_is_checked_at_submit(self, world, as_user):
        pair = pair_create(team=world["acme"])
        response = as_user(world["alice"]).post(API + "/jobs/", {
            "kind": "compress", "pair": pair.pk, "codec_config": {"id": "zstd"}, "options": {"max_tokens": "x"}},
            format="json")
        assert response.status_code == 400 and "max_tokens" in response.json()["message"]
