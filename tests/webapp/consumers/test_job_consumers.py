"""JobConsumer and TeamJobsConsumer through the real ASGI stack (origin check, session/token auth, URL routing)
on the in-memory channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.authtoken.models import Token

from webapp.jobs.models import Job
from webapp.jobs.selectors import job_state
from webapp.teams.services import team_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = [(b"origin", b"http://testserver")]


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture
def application():
    from webapp.asgi import application

    return application


def _make_world():
    User = get_user_model()
    alice = User.objects.create_user(username="alice", password="pw-alice-123")
    bob = User.objects.create_user(username="bob", password="pw-bob-123")
    acme = team_create(name="Acme", owner=alice)
    other = team_create(name="Other", owner=bob)
    job = Job.objects.create(team=acme, created_by=alice, kind="compress", codec_config={"id": "zstd"},
                             progress=12.5, stage="encoding")
    foreign = Job.objects.create(team=other, created_by=bob, kind="compress", codec_config={"id": "zstd"})
    return {
        "alice": alice, "bob": bob, "acme": acme, "other": other, "job": job, "foreign": foreign,
        "alice_token": Token.objects.create(user=alice).key, "bob_token": Token.objects.create(user=bob).key,
    }


@pytest.fixture
def world():
    return _make_world()


async def _connect(application, path, headers=ORIGIN):
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


async def _refused(application, path, headers=ORIGIN) -> int:
    """Refusals complete the handshake and then close with a code (a refused handshake is an HTTP 403 that a
    browser cannot tell from a network error, and retries)."""
    comm, connected, _ = await _connect(application, path, headers)
    assert connected, "refused at the handshake (HTTP 403) instead of with a close code"
    message = await comm.receive_output()
    assert message["type"] == "websocket.close", message
    return message["code"]


async def _assert_no_groups_left():
    layer = get_channel_layer()
    assert layer.groups == {}


async def test_job_socket_sends_the_row_state_then_forwards_updates(application, world):
    job = world["job"]
    comm, connected, _ = await _connect(application, f"/ws/jobs/{job.pk}/?token={world['alice_token']}")
    assert connected
    first = await comm.receive_json_from()
    assert first["type"] == "job.state"
    assert first["job"]["id"] == job.pk
    assert first["job"]["progress"] == 12.5
    assert first["job"]["stage"] == "encoding"
    assert first["job"]["team"] == "acme"

    update = dict(await sync_to_async(job_state)(job), progress=55.0, stage="writing")
    await get_channel_layer().group_send(f"job-{job.pk}", {"type": "job.update", "job": update})
    message = await comm.receive_json_from()
    assert message == {"type": "job.update", "job": update}

    # Updates of other jobs are not delivered to this socket.
    await get_channel_layer().group_send(f"job-{world['foreign'].pk}", {"type": "job.update", "job": {"id": 0}})
    assert await comm.receive_nothing(timeout=0.2)

    await comm.disconnect()
    await _assert_no_groups_left()


async def test_session_cookie_authenticates(application, world):
    client = Client()
    await sync_to_async(client.force_login)(world["alice"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    comm, connected, _ = await _connect(application, f"/ws/jobs/{world['job'].pk}/",
                                        headers=[*ORIGIN, (b"cookie", cookie)])
    assert connected
    assert (await comm.receive_json_from())["job"]["id"] == world["job"].pk
    await comm.disconnect()
    await _assert_no_groups_left()


async def test_anonymous_is_refused(application, world):
    assert await _refused(application, f"/ws/jobs/{world['job'].pk}/") == 4401
    assert await _refused(application, f"/ws/jobs/{world['job'].pk}/?token=not-a-token") == 4401
    await _assert_no_groups_left()


async def test_other_teams_job_is_refused_like_a_missing_one(application, world):
    assert await _refused(application, f"/ws/jobs/{world['foreign'].pk}/?token={world['alice_token']}") == 4404
    assert await _refused(application, f"/ws/jobs/999999/?token={world['alice_token']}") == 4404
    await _assert_no_groups_left()


@pytest.mark.parametrize("path", ["/ws/jobs/-1/", "/ws/teams/..%2Fbravo/jobs/", "/ws/jobs/abc/", "/ws/nothing/"])
async def test_unknown_paths_are_not_found_not_a_server_error(application, world, path):
    assert await _refused(application, f"{path}?token={world['alice_token']}") == 4404
    await _assert_no_groups_left()


async def test_removing_a_member_closes_her_open_sockets(application, world):
    from webapp.teams.services import membership_add, membership_remove

    await sync_to_async(membership_add)(team=world["acme"], user=world["bob"])
    bob = f"?token={world['bob_token']}"
    team_socket, connected, _ = await _connect(application, f"/ws/teams/acme/jobs/{bob}")
    assert connected and (await team_socket.receive_json_from())["type"] == "jobs.state"
    job_socket, connected, _ = await _connect(application, f"/ws/jobs/{world['job'].pk}/{bob}")
    assert connected and (await job_socket.receive_json_from())["type"] == "job.state"
    own_team, connected, _ = await _connect(application, f"/ws/teams/other/jobs/{bob}")
    assert connected and (await own_team.receive_json_from())["type"] == "jobs.state"
    alice_socket, connected, _ = await _connect(application, f"/ws/teams/acme/jobs/?token={world['alice_token']}")
    assert connected and await alice_socket.receive_json_from()

    await sync_to_async(membership_remove)(team=world["acme"], user=world["bob"], by=world["alice"])
    assert await team_socket.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    assert await job_socket.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    # Nothing more reaches her, and her own team's socket and the others' sockets stay open.
    await get_channel_layer().group_send("team-other", {"type": "job.update", "job": {"id": 1}})
    assert (await own_team.receive_json_from())["job"] == {"id": 1}
    await get_channel_layer().group_send("team-acme", {"type": "job.update", "job": {"id": 2}})
    assert (await alice_socket.receive_json_from())["job"] == {"id": 2}
    for comm in (team_socket, job_socket, own_team, alice_socket):
        await comm.disconnect()
    await _assert_no_groups_left()


async def test_revoking_a_token_closes_the_sockets_opened_with_it(application, world):
    from webapp.dashboard.services import api_token_create, api_token_revoke

    by_token, connected, _ = await _connect(application, f"/ws/teams/acme/jobs/?token={world['alice_token']}")
    assert connected and await by_token.receive_json_from()
    client = Client()
    await sync_to_async(client.force_login)(world["alice"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    by_session, connected, _ = await _connect(application, "/ws/teams/acme/jobs/", headers=[*ORIGIN, (b"cookie", cookie)])
    assert connected and await by_session.receive_json_from()

    await sync_to_async(api_token_revoke)(user=world["alice"])
    assert await by_token.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    assert await by_session.receive_nothing(timeout=0.3)   # the session still holds
    await by_session.disconnect()

    # Replacing the token (a new one revokes the old) does the same.
    token = (await sync_to_async(api_token_create)(user=world["alice"])).key
    again, connected, _ = await _connect(application, f"/ws/jobs/{world['job'].pk}/?token={token}")
    assert connected and await again.receive_json_from()
    await sync_to_async(api_token_create)(user=world["alice"])
    assert await again.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    await _assert_no_groups_left()


async def test_foreign_origin_is_refused(application, world, settings):
    # The validator reads ALLOWED_HOSTS when the ASGI app is built: rebuild the same stack with a strict list.
    from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator

    validator = application.application_mapping["websocket"]
    assert isinstance(validator, OriginValidator)
    settings.ALLOWED_HOSTS = ["testserver"]
    strict = AllowedHostsOriginValidator(validator.application)
    path = f"/ws/jobs/{world['job'].pk}/?token={world['alice_token']}"
    comm, connected, _ = await _connect(strict, path, headers=[(b"origin", b"http://evil.example")])
    assert not connected
    comm, connected, _ = await _connect(strict, path, headers=ORIGIN)
    assert connected
    await comm.disconnect()
    await _assert_no_groups_left()


async def test_team_socket_lists_recent_jobs_then_forwards_updates(application, world):
    comm, connected, _ = await _connect(application, f"/ws/teams/acme/jobs/?token={world['alice_token']}")
    assert connected
    first = await comm.receive_json_from()
    assert first["type"] == "jobs.state"
    assert [j["id"] for j in first["jobs"]] == [world["job"].pk]  # not the other team's job

    update = dict(await sync_to_async(job_state)(world["job"]), status="succeeded", progress=100.0)
    await get_channel_layer().group_send("team-acme", {"type": "job.update", "job": update})
    assert await comm.receive_json_from() == {"type": "job.update", "job": update}

    await get_channel_layer().group_send("team-other", {"type": "job.update", "job": {"id": 0}})
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()
    await _assert_no_groups_left()


async def test_team_socket_refuses_teams_the_user_is_not_in(application, world):
    assert await _refused(application, f"/ws/teams/other/jobs/?token={world['alice_token']}") == 4404
    assert await _refused(application, f"/ws/teams/nope/jobs/?token={world['alice_token']}") == 4404
    await _assert_no_groups_left()


async def test_ping_gets_pong(application, world):
    comm, connected, _ = await _connect(application, f"/ws/jobs/{world['job'].pk}/?token={world['alice_token']}")
    assert connected
    await comm.receive_json_from()
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    await comm.disconnect()
    await _assert_no_groups_left()


async def test_an_update_checks_access_again_when_the_push_was_lost(application, world, monkeypatch):
    from webapp.dashboard import consumers
    from webapp.teams.services import membership_add, membership_remove

    monkeypatch.setattr(consumers, "ACCESS_RECHECK_SECONDS", 0.0)
    monkeypatch.setattr("webapp.teams.services.user_sockets_recheck", lambda **_: None)   # the push is lost
    await sync_to_async(membership_add)(team=world["acme"], user=world["bob"])
    comm, connected, _ = await _connect(application, f"/ws/teams/acme/jobs/?token={world['bob_token']}")
    assert connected and await comm.receive_json_from()
    await get_channel_layer().group_send("team-acme", {"type": "job.update", "job": {"id": 1}})
    assert (await comm.receive_json_from())["job"] == {"id": 1}
    await sync_to_async(membership_remove)(team=world["acme"], user=world["bob"], by=world["alice"])
    await get_channel_layer().group_send("team-acme", {"type": "job.update", "job": {"id": 2, "log_tail": "secret"}})
    assert await comm.receive_output(timeout=2) == {"type": "websocket.close", "code": 4403}
    await comm.disconnect()
    await _assert_no_groups_left()
