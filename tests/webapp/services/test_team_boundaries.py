"""Team boundaries: members join only by accepting an invitation, the current team never changes by itself, and
each team registers models and datasets only from its own folders, with errors that tell nothing about the rest."""

import os

import pytest
from django.core.exceptions import PermissionDenied

from tests.factories import tiny_model_write, user_create
from webapp.core.exceptions import ApplicationError
from webapp.registry.models import Dataset, ModelEntry
from webapp.registry.services import dataset_register_from_path, model_register_from_path
from webapp.teams.models import Invitation, Membership
from webapp.teams.selectors import invitation_list_for_user, membership_role, team_current_for_user
from webapp.teams.services import (invitation_accept, invitation_cancel, invitation_create, invitation_decline,
                                   team_choose)

pytestmark = pytest.mark.django_db


class InvitationTests:
    def test_an_invitation_adds_no_one_until_accepted(self, world):
        invitation = invitation_create(team=world["other"], username="alice", role="member", by=world["bob"])
        assert membership_role(user=world["alice"], team=world["other"]) is None
        assert list(invitation_list_for_user(user=world["alice"])) == [invitation]
        membership = invitation_accept(invitation=invitation, user=world["alice"])
        assert membership.role == "member" and membership_role(user=world["alice"], team=world["other"]) == "member"
        invitation.refresh_from_db()
        assert invitation.status == "accepted" and invitation.responded_at
        assert not invitation_list_for_user(user=world["alice"]).exists()

    def test_joining_a_team_does_not_change_the_current_team(self, world):
        # "Acme" sorts before "Other": bob's first team by name would become acme if the choice followed names
        assert team_current_for_user(user=world["bob"]) == world["other"]
        invitation = invitation_create(team=world["acme"], username="bob", by=world["alice"])
        invitation_accept(invitation=invitation, user=world["bob"])
        assert team_current_for_user(user=world["bob"]) == world["other"]
        team_choose(user=world["bob"], team=world["acme"])
        assert team_current_for_user(user=world["bob"]) == world["acme"]

    def test_the_answer_is_the_same_whether_or_not_the_user_exists(self, world):
        real = invitation_create(team=world["acme"], username="bob", by=world["alice"])
        ghost = invitation_create(team=world["acme"], username="nobody-by-this-name", by=world["alice"])
        assert (real.status, real.role) == (ghost.status, ghost.role) == ("pending", "member")
        # a user who later takes the name finds the invitation waiting
        later = user_create(username="nobody-by-this-name")
        assert list(invitation_list_for_user(user=later)) == [ghost]

    def test_only_the_invitee_answers_and_only_once(self, world):
        invitation = invitation_create(team=world["other"], username="alice", by=world["bob"])
        with pytest.raises(PermissionDenied):
            invitation_accept(invitation=invitation, user=world["mallory"])
        invitation_decline(invitation=invitation, user=world["alice"])
        with pytest.raises(ApplicationError, match="no longer pending"):
            invitation_accept(invitation=invitation, user=world["alice"])
        assert membership_role(user=world["alice"], team=world["other"]) is None

    def test_only_admins_invite_and_withdraw(self, world):
        for user in (world["mallory"], world["victor"], world["bob"]):
            with pytest.raises(PermissionDenied):
                invitation_create(team=world["acme"], username="carol", by=user)
        invitation = invitation_create(team=world["acme"], username="carol", role="viewer", by=world["alice"])
        with pytest.raises(PermissionDenied):
            invitation_cancel(invitation=invitation, by=world["mallory"])
        invitation_cancel(invitation=invitation, by=world["alice"])
        assert Invitation.objects.get().status == "cancelled"

    def test_a_second_invitation_updates_the_pending_one(self, world):
        invitation_create(team=world["acme"], username="carol", role="viewer", by=world["alice"])
        again = invitation_create(team=world["acme"], username="carol", role="admin", by=world["alice"])
        assert Invitation.objects.filter(status="pending").count() == 1 and again.role == "admin"
        with pytest.raises(ApplicationError, match="already in this team"):
            invitation_create(team=world["acme"], username="mallory", by=world["alice"])
        with pytest.raises(ApplicationError, match="Unknown role"):
            invitation_create(team=world["acme"], username="carol", role="owner", by=world["alice"])
        assert Membership.objects.filter(team=world["acme"]).count() == 3


class TeamFolderTests:
    @pytest.fixture
    def other_model(self, dv_dirs):
        """A model in team other's folder."""
        folder = dv_dirs["root"] / "other" / "secret-model"
        tiny_model_write(folder)
        (folder.parent / "notes.txt").write_text("other's data\n")
        return folder

    @pytest.mark.parametrize("relative", ["secret-model", "does-not-exist"])
    def test_another_teams_folder_is_refused_alike_whether_it_exists_or_not(self, world, dv_dirs, other_model,
                                                                            relative):
        path = str(dv_dirs["root"] / "other" / relative)
        with pytest.raises(ApplicationError) as info:
            model_register_from_path(team=world["acme"], user=world["alice"], name="m", path=path)
        assert info.value.message == "The path is not inside your team's folders."
        assert info.value.extra == {"path": path}  # what the user typed, nothing about the roots
        assert not ModelEntry.objects.exists()

    def test_the_owner_team_registers_it(self, world, other_model):
        entry = model_register_from_path(team=world["other"], user=world["bob"], name="m", path="secret-model")
        assert entry.path == str(other_model.resolve())

    def test_datasets_too(self, world, dv_dirs, other_model):
        with pytest.raises(ApplicationError, match="not inside your team's folders"):
            dataset_register_from_path(team=world["acme"], user=world["alice"], name="d",
                                       path=str(dv_dirs["root"] / "other" / "notes.txt"))
        assert dataset_register_from_path(team=world["other"], user=world["bob"], name="d", path="notes.txt")
        assert Dataset.objects.get().team == world["other"]

    def test_a_symlink_from_one_team_folder_into_another_is_refused(self, world, dv_dirs, other_model):
        os.symlink(other_model, dv_dirs["acme"] / "borrowed")
        with pytest.raises(ApplicationError, match="not inside your team's folders"):
            model_register_from_path(team=world["acme"], user=world["alice"], name="m", path="borrowed")

    def test_a_missing_path_in_the_team_folder_says_it_does_not_exist(self, world, dv_dirs):
        with pytest.raises(ApplicationError, match="does not exist"):
            model_register_from_path(team=world["acme"], user=world["alice"], name="m",
                                     path=str(dv_dirs["acme"] / "nope"))


class HostileInputTests:
    """Each of these answered 500 before; now a clear ApplicationError (400) and nothing registered."""

    def _refused(self, world, path, match, kind="model"):
        service = model_register_from_path if kind == "model" else dataset_register_from_path
        with pytest.raises(ApplicationError, match=match):
            service(team=world["acme"], user=world["alice"], name="x", path=str(path))
        assert not ModelEntry.objects.exists() and not Dataset.objects.exists()

    @pytest.mark.parametrize("kind", ["model", "dataset"])
    def test_a_symlink_loop_at_the_path(self, world, dv_dirs, kind):
        os.symlink(dv_dirs["acme"] / "loop-b", dv_dirs["acme"] / "loop-a")
        os.symlink(dv_dirs["acme"] / "loop-a", dv_dirs["acme"] / "loop-b")
        self._refused(world, dv_dirs["acme"] / "loop-a", "cannot be read", kind)
        self._refused(world, dv_dirs["acme"] / "loop-a" / "inner", "cannot be read", kind)

    def test_a_symlink_loop_inside_the_model_folder(self, world, dv_dirs, tiny_pair_dirs):
        base_dir, _ = tiny_pair_dirs
        os.symlink(base_dir / "self", base_dir / "self")
        self._refused(world, base_dir, "symlink loop")

    @pytest.mark.parametrize("kind", ["model", "dataset"])
    def test_a_path_component_over_255_characters(self, world, dv_dirs, kind):
        self._refused(world, dv_dirs["acme"] / ("x" * 300), "cannot be read", kind)

    @pytest.mark.parametrize("depth", [5000, 100000])
    def test_config_json_nested_deeply(self, world, tiny_pair_dirs, depth):
        base_dir, _ = tiny_pair_dirs
        (base_dir / "config.json").write_text('{"a": ' + "[" * depth + "]" * depth + "}")
        self._refused(world, base_dir, "nested too deeply")

    def test_safetensors_header_nested_deeply(self, world, dv_dirs):
        import struct

        folder = dv_dirs["acme"] / "deep"
        folder.mkdir()
        header = ('{"__metadata__": ' + "[" * 50000 + "]" * 50000 + "}").encode()
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
        self._refused(world, folder, "nested too deeply")

    @pytest.mark.parametrize("field", ["model_type", "architectures"])
    def test_nul_in_config_json(self, world, tiny_pair_dirs, field):
        """PostgreSQL cannot store NUL in text or jsonb: refused up front on every database."""
        import json

        base_dir, _ = tiny_pair_dirs
        value = "llama\u0000" if field == "model_type" else ["Llama\u0000ForCausalLM"]
        (base_dir / "config.json").write_text(json.dumps({field: value}))
        self._refused(world, base_dir, "NUL")
