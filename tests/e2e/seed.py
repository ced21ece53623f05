"""Create users, teams and DRF tokens in the end-to-end stack's database (run as a subprocess with the stack's
environment). Reads a JSON spec on stdin: {"users": [{"username", "password", "team": {"name", "slug"}}]};
prints {"<username>": {"token": ..., "team": <slug>}} as the last line."""

import json
import sys

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from webapp.teams.models import Team  # noqa: E402
from webapp.teams.services import membership_add, team_create  # noqa: E402


def main() -> None:
    spec = json.load(sys.stdin)
    User = get_user_model()
    made = {}
    for entry in spec["users"]:
        user = User.objects.filter(username=entry["username"]).first()
        if user is None:
            user = User.objects.create_user(username=entry["username"], password=entry["password"])
        team = Team.objects.filter(slug=entry["team"]["slug"]).first()
        if team is None:
            team = team_create(name=entry["team"]["name"], slug=entry["team"]["slug"], owner=user)
        else:
            membership_add(team=team, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        made[user.username] = {"token": token.key, "team": team.slug}
    print(json.dumps(made))


if __name__ == "__main__":
    main()
