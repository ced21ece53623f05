"""Every web app unit test gets its own DeltaVault folders and the in-memory channel layer (no Redis needed)."""

import pytest


@pytest.fixture(autouse=True)
def _webapp_isolation(dv_dirs, in_memory_channel_layer):
    yield


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def world(db):
    """Two teams. acme: alice (admin), mallory (member), victor (viewer). other: bob (admin)."""
    from webapp.teams.models import Membership
    from tests.factories import team_create, user_create

    alice, mallory, victor, bob = (user_create(username=n) for n in ("alice", "mallory", "victor", "bob"))
    acme = team_create(name="Acme", slug="acme", members={alice: Membership.Role.ADMIN,
                                                          mallory: Membership.Role.MEMBER,
                                                          victor: Membership.Role.VIEWER})
    other = team_create(name="Other", slug="other", members={bob: Membership.Role.ADMIN})
    return {"alice": alice, "mallory": mallory, "victor": victor, "bob": bob, "acme": acme, "other": other}


class EventCollector:
    """Listens on a channel-layer group and returns the events published so far."""

    def __init__(self, layer, group: str):
        from asgiref.sync import async_to_sync

        self.layer = layer
        self.group = group
        self.channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, self.channel)

    def drain(self) -> list[dict]:
        import asyncio

        from asgiref.sync import async_to_sync

        async def _drain():
            events = []
            while True:
                try:
                    events.append(await asyncio.wait_for(self.layer.receive(self.channel), 0.05))
                except asyncio.TimeoutError:
                    return events

        return async_to_sync(_drain)()


@pytest.fixture
def collect_events(in_memory_channel_layer):
    def _collect(group: str) -> EventCollector:
        return EventCollector(in_memory_channel_layer, group)

    return _collect


@pytest.fixture
def pair(world, tiny_pair_dirs):
    """A registered tiny base + fine-tune pair of team acme (real safetensors folders)."""
    from webapp.registry.services import model_register_from_path, pair_create

    base_dir, ft_dir = tiny_pair_dirs
    team, user = world["acme"], world["alice"]
    base = model_register_from_path(team=team, user=user, name="base", path=str(base_dir))
    ft = model_register_from_path(team=team, user=user, name="ft", path=str(ft_dir))
    return pair_create(team=team, user=user, name="tiny", base=base, finetuned=ft)
