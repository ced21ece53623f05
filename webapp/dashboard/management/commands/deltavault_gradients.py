"""Record real gradient sets and register them: a small CNN trained on scikit-learn's handwritten digits and a
small byte-level transformer trained on real English text (CPython's pydoc topics), both from data that installed
packages ship (``modelcodecs.gradient_runs``). Each set is compressed with LM-GC (built-in prior) and the classical
baselines that need no base, so the gradient set's page has its rate table. Minutes on a CPU.

    python manage.py deltavault_gradients [--team demo] [--username demo] [--steps-cnn 400] [--steps-text 100]
                                          [--every 20] [--no-job]
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.core.paths import team_roots
from webapp.jobs.services import job_run, job_submit
from webapp.registry.models import GradientSet
from webapp.registry.services import gradient_set_register_from_path
from webapp.teams.models import Team

# compressed on each set: LM-GC with its built-in prior, and baselines that need no base
GRADIENT_CODECS = ({"id": "lmgc"}, {"id": "zstd", "level": 19})


class Command(BaseCommand):
    help = "Train small real networks on real data, record their gradients and register the gradient sets."

    def add_arguments(self, parser):
        parser.add_argument("--team", default="demo", help="team slug (default: the demo team)")
        parser.add_argument("--username", default="demo", help="who registers the sets")
        parser.add_argument("--steps-cnn", type=int, default=400)
        parser.add_argument("--steps-text", type=int, default=100)
        parser.add_argument("--every", type=int, default=20, help="record gradients every N steps")
        parser.add_argument("--no-job", action="store_true", help="register only; run no compress job")

    def handle(self, *args, team: str, username: str, steps_cnn: int, steps_text: int, every: int, no_job: bool,
               **options):
        from modelcodecs import gradient_runs

        user = get_user_model().objects.filter(username=username).first()
        team_obj = Team.objects.filter(slug=team).first()
        if user is None or team_obj is None:
            raise CommandError(f"no user {username!r} or team {team!r}: run `manage.py deltavault_demo` first")
        roots = team_roots(team_obj)  # the team's own folders: teams register only from theirs
        if not roots:
            raise CommandError("no model roots configured (DELTAVAULT_MODEL_ROOTS)")
        root = roots[0] / "gradients"
        runs = [
            ("digits-cnn", gradient_runs.train_digits_cnn, steps_cnn),
            ("docs-transformer", gradient_runs.train_text_transformer, steps_text),
        ]
        for name, train, steps in runs:
            if GradientSet.objects.filter(team=team_obj, name=name).exists():
                self.stdout.write(f"gradient set {name} already registered")
                continue
            folder = root / name
            if not any(folder.glob("*.safetensors")):
                self.stdout.write(f"training {name} ({steps} steps, gradients every {every})…")
                summary = train(folder, steps=steps, every=max(1, min(every, steps)))
                self.stdout.write(json.dumps(summary))
                description = (f"{summary['source']}; {summary['parameters']:,} parameters; loss "
                               f"{summary['first_loss']} -> {summary['last_loss']} in {summary['steps']} steps")
            else:
                description = f"recorded by deltavault_gradients ({name})"
            entry = gradient_set_register_from_path(team=team_obj, user=user, name=name, path=str(folder),
                                                    description=description)
            self.stdout.write(f"registered gradient set {name}: {entry.float_count:,} floats in "
                              f"{len(entry.steps)} steps")
            if no_job:
                continue
            for config in GRADIENT_CODECS:
                job = job_run(job=job_submit(team=team_obj, user=user, kind="compress", gradient_set=entry,
                                             codec_config=config))
                self.stdout.write(f"  {config['id']}: {job.status} rate {job.metrics.get('rate')} "
                                  f"{job.metrics.get('bits_per_float', '')}")
        self.stdout.write(self.style.SUCCESS("gradient sets ready"))
