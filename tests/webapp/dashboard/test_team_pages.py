"""The team pages (members, roles, invitations) and the error pages, server-rendered."""

from unittest import mock

import pytest
from django.urls import reverse

from tests.factories import user_create
from webapp.teams.models import Invitation
from webapp.teams.selectors import membership_role, team_current_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_of(client):
    def _login(user):
        client.force_login(user)
        return client

    return _login


def test_the_header_links_the_team_page_and_the_team_page_lists_members(world, client_of):
    client = client_of(world["alice"])
    html = client.get(reverse("dashboard:job_list")).content.decode()
    assert f'href="{reverse("dashboard:team_detail", args=["acme"])}"' in html
    page = client.get(reverse("dashboard:team_detail", args=["acme"])).content.decode()
    for name, role in (("alice", "admin"), ("mallory", "member"), ("victor", "viewer")):
        assert f'data-member="{name}"' in page
        assert f'value="{role}" selected' in page
    assert reverse("dashboard:team_new") in page and "Invite someone" in page


def test_other_teams_pages_are_404(world, client_of):
    assert client_of(world["alice"]).get(reverse("dashboard:team_detail", args=["other"])).status_code == 404


def test_non_admins_see_members_but_no_management(world, client_of):
    page = client_of(world["mallory"]).get(reverse("dashboard:team_detail", args=["acme"])).content.decode()
    assert 'data-member="alice"' in page and "Invite someone" not in page and "/role/" not in page
    response = client_of(world["mallory"]).post(reverse("dashboard:team_invite", args=["acme"]),
                                                {"username": "bob", "role": "member"})
    assert response.status_code == 302 and not Invitation.objects.exists()


def test_invite_accept_and_the_current_team_stays(world, client_of):
    admin = client_of(world["bob"])
    admin.post(reverse("dashboard:team_invite", args=["other"]), {"username": "alice", "role": "viewer"})
    invitation = Invitation.objects.get()
    assert membership_role(user=world["alice"], team=world["other"]) is None
    client = client_of(world["alice"])
    assert "Invitations (1)" in client.get(reverse("dashboard:pair_list")).content.decode()
    listing = client.get(reverse("dashboard:team_list")).content.decode()
    assert f'data-invitation-id="{invitation.pk}"' in listing and "Other" in listing
    client.post(reverse("dashboard:invitation_accept", args=[invitation.pk]))
    assert membership_role(user=world["alice"], team=world["other"]) == "viewer"
    assert team_current_for_user(user=world["alice"]) == world["acme"]  # still acme: joining switches nothing
    assert "Invitations (" not in client.get(reverse("dashboard:pair_list")).content.decode()


def test_admins_change_roles_remove_and_withdraw(world, client_of):
    client = client_of(world["alice"])
    client.post(reverse("dashboard:team_member_role", args=["acme", "victor"]), {"victor-role": "member"})
    assert membership_role(user=world["victor"], team=world["acme"]) == "member"
    client.post(reverse("dashboard:team_member_remove", args=["acme", "victor"]))
    assert membership_role(user=world["victor"], team=world["acme"]) is None
    client.post(reverse("dashboard:team_invite", args=["acme"]), {"username": "carol", "role": "member"})
    invitation = Invitation.objects.get()
    client.post(reverse("dashboard:team_invitation_cancel", args=["acme", invitation.pk]))
    invitation.refresh_from_db()
    assert invitation.status == "cancelled"
    # the last admin cannot demote herself: the page says why
    response = client.post(reverse("dashboard:team_member_role", args=["acme", "alice"]), {"alice-role": "viewer"},
                           follow=True)
    assert "at least one admin" in response.content.decode()


def test_a_member_leaves(world, client_of):
    client = client_of(world["mallory"])
    response = client.post(reverse("dashboard:team_member_remove", args=["acme", "mallory"]))
    assert response["Location"] == reverse("dashboard:team_list")
    assert membership_role(user=world["mallory"], team=world["acme"]) is None


def test_team_new_is_linked_and_reserved_slugs_are_refused(world, client_of):
    client = client_of(user_create(username="solo"))
    assert reverse("dashboard:team_new") in client.get(reverse("dashboard:team_list")).content.decode()
    response = client.post(reverse("dashboard:team_new"), {"name": "New"}, follow=True)
    assert "is reserved" in response.content.decode()


class ErrorPageTests:
    def test_404_is_the_products_page_not_a_url_listing(self, world, client_of, settings):
        settings.DEBUG = False
        response = client_of(world["alice"]).get("/no-such-page/")
        html = response.content.decode()
        assert response.status_code == 404 and "Not found" in html and "URLconf" not in html
        assert "api/v1/" not in html

    def test_500_is_the_products_page_without_a_traceback(self, world, client):
        client.raise_request_exception = False
        client.force_login(world["alice"])
        with mock.patch("webapp.dashboard.views.job_list", side_effect=RuntimeError("secret /srv/settings")):
            response = client.get(reverse("dashboard:job_list"))
        html = response.content.decode()
        assert response.status_code == 500 and "Something went wrong on our side" in html
        assert "secret" not in html and "Traceback" not in html and "REDIS" not in html


def test_the_pair_page_imports_an_artifact_made_with_the_cli(world, client_of, pair, tmp_path):
    import modelcodecs
    from django.core.files.uploadedfile import SimpleUploadedFile

    from webapp.registry.models import Artifact

    out = tmp_path / "cli.dvz"
    modelcodecs.compress_model(pair.finetuned.path, out, codec={"id": "zstd"})
    client = client_of(world["mallory"])
    page = client.get(reverse("dashboard:pair_detail", args=[pair.pk])).content.decode()
    assert reverse("dashboard:artifact_import", args=[pair.pk]) in page
    response = client.post(reverse("dashboard:artifact_import", args=[pair.pk]),
                           {"file": SimpleUploadedFile("cli.dvz", out.read_bytes())}, follow=True)
    artifact = Artifact.objects.get()
    assert artifact.source == "import" and artifact.verification == "verified"
    assert "restores ft exactly" in response.content.decode() and "imported" in response.content.decode()
    bad = client.post(reverse("dashboard:artifact_import", args=[pair.pk]),
                      {"file": SimpleUploadedFile("x.dvz", b"junk")}, follow=True)
    assert "Not a DeltaVault artifact" in bad.content.decode() and Artifact.objects.count() == 1
