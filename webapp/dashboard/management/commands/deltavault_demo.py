"""Load the demo: a user, a team, a tiny base/fine-tuned transformer pair (made here by fine-tuning a tiny model),
registered through the services, a text dataset, finished compression jobs (FM-Delta and zstd), their
restore-and-verify jobs and perplexity evaluations for the pair page's chart. Safe to run again: whatever
already exists is kept.

    python manage.py deltavault_demo [--username demo] [--password demo-password] [--no-job]
"""

from __future__ import annotations

import inspect
from pathlib import Path

import modelcodecs
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.core.paths import team_roots
from webapp.jobs.models import Job
from webapp.jobs.selectors import job_list
from webapp.jobs.services import job_run, job_submit
from webapp.registry.selectors import artifact_list, dataset_list, model_list, pair_list
from webapp.registry.services import dataset_register_from_path, model_register_from_path, pair_create
from webapp.teams.models import Team
from webapp.teams.services import membership_add, team_create

TEAM_NAME, TEAM_SLUG = "Demo Lab", "demo"
# Compressed in the demo when registered: a lossless delta codec and a plain baseline to compare with.
DEMO_CODECS = ("fmdelta", "zstd")
BASE_NAME, FT_NAME, PAIR_NAME, DATASET_NAME = "tiny-base", "tiny-chat", "tiny-chat vs tiny-base", "demo-text"

DEMO_TEXT = """DeltaVault keeps one base model and stores each fine-tune as a compressed delta against it.
A lossless codec restores every byte of the fine-tuned checkpoint; a lossy one trades a little quality for a much
smaller artifact. The pair page compares the codecs: ratio, speed, verification and perplexity on a text like
this one. Jobs run on workers and report their progress live to the browser.
"""


def make_pair(root: Path) -> tuple[Path, Path]:
    """Build the tiny pair with ``modelcodecs.synthetic.make_tiny_transformer_pair`` (once)."""
    base_dir, ft_dir = root / "base", root / "finetuned"
    if (base_dir / "config.json").exists() and (ft_dir / "config.json").exists():
        return base_dir, ft_dir
    try:
        from modelcodecs.synthetic import make_tiny_transformer_pair
    except ImportError as exc:
        raise CommandError(f"modelcodecs.synthetic is not available ({exc}); install with "
                           "pip install -e '.[models]'") from exc
    params = inspect.signature(make_tiny_transformer_pair).parameters
    kwargs = {}
    if "seed" in params:
        kwargs["seed"] = 0
    if "base_dir" in params and "finetuned_dir" in params:
        result = make_tiny_transformer_pair(base_dir=base_dir, finetuned_dir=ft_dir, **kwargs)
    else:
        result = make_tiny_transformer_pair(root, **kwargs)
    if isinstance(result, (tuple, list)) and len(result) >= 2:
        base_dir, ft_dir = Path(result[0]), Path(result[1])
    elif isinstance(result, dict) and "base" in result:
        base_dir, ft_dir = Path(result["base"]), Path(result["finetuned"])
    return base_dir, ft_dir


class Command(BaseCommand):
    help = "Create the demo user, team, tiny model pair, dataset and finished jobs (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")
        parser.add_argument("--no-job", action="store_true", help="do not run the demo jobs")

    def handle(self, *args, username: str, password: str, no_job: bool, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=password)
            self.stdout.write(f"created user {username}")
        team = Team.objects.filter(slug=TEAM_SLUG).first()
        if team is None:
            team = team_create(name=TEAM_NAME, slug=TEAM_SLUG, owner=user)
            self.stdout.write(f"created team {TEAM_NAME}")
        else:
            membership_add(team=team, user=user, role="admin")

        root = team_roots(team)[0]  # the team's own folder: teams register only from theirs
        root.mkdir(parents=True, exist_ok=True)
        models = {m.name: m for m in model_list(team=team)}
        if BASE_NAME not in models or FT_NAME not in models:
            self.stdout.write("building the tiny transformer pair (a few seconds)…")
            base_dir, ft_dir = make_pair(root)
            for name, path in ((BASE_NAME, base_dir), (FT_NAME, ft_dir)):
                if name not in models:
                    models[name] = model_register_from_path(team=team, user=user, name=name, path=str(path))
                    self.stdout.write(f"registered model {name} ({path})")

        pair = pair_list(team=team).filter(name=PAIR_NAME).first()
        if pair is None:
            pair = pair_create(team=team, user=user, name=PAIR_NAME, base=models[BASE_NAME],
                               finetuned=models[FT_NAME])
            self.stdout.write(f"created pair {PAIR_NAME}")

        if not dataset_list(team=team).filter(name=DATASET_NAME).exists():
            # Held-out text of the fine-tune's domain when the pair builder wrote one, else a short paragraph.
            text = root / "eval.txt"
            if not text.exists():
                text = root / "demo-text.txt"
                text.write_text(DEMO_TEXT * 8, encoding="utf-8")
            dataset_register_from_path(team=team, user=user, name=DATASET_NAME, path=str(text))
            self.stdout.write(f"registered dataset {DATASET_NAME}")

        if not no_job:
            self._run_demo_jobs(team=team, user=user, pair=pair, models=models)

        self.stdout.write(self.style.SUCCESS(f"demo ready: log in as {username} / {password}"))

    def _run(self, **kwargs) -> Job:
        """Submit a job and run it here, so the dashboard has results at once (the queued task then finds it
        finished and leaves it alone)."""
        job = job_submit(**kwargs)
        return job_run(job=job)

    def _run_demo_jobs(self, *, team, user, pair, models) -> None:
        pending = job_list(team=team, filters={"status": [Job.Status.QUEUED, Job.Status.RUNNING]})
        if pending.exists():
            self.stdout.write("demo jobs are already queued or running; not adding more")
            return
        available = {c.codec_id for c in modelcodecs.list_codecs()}
        done = set(artifact_list(team=team, filters={"pair": pair.pk}).values_list("codec_id", flat=True))
        for codec in [c for c in DEMO_CODECS if c in available and c not in done]:
            job = self._run(team=team, user=user, kind=Job.Kind.COMPRESS, pair=pair, codec_config={"id": codec})
            self.stdout.write(f"compression job #{job.pk} ({codec}): {job.status}")
            if job.status != Job.Status.SUCCEEDED:
                raise CommandError(f"the demo compression job failed: {job.error}")
        # Restore and verify each artifact once (the pair page then shows them verified).
        restored = job_list(team=team, filters={"kind": [Job.Kind.DECOMPRESS]})
        for artifact in artifact_list(team=team, filters={"pair": pair.pk}):
            if not restored.filter(artifact=artifact).exists():
                job = self._run(team=team, user=user, kind=Job.Kind.DECOMPRESS, artifact=artifact)
                self.stdout.write(f"decompress+verify job #{job.pk} (artifact #{artifact.pk}): {job.status}")
        # Perplexity of the fine-tune and of each artifact, for the pair page's ratio/quality chart. Evaluation
        # needs a model that runs (torch + transformers); when it fails the demo still works without the chart.
        dataset = dataset_list(team=team).filter(name=DATASET_NAME).first()
        tried = job_list(team=team, filters={"kind": [Job.Kind.EVALUATE]})   # once per target, even if it failed
        targets = []
        if not tried.filter(model=models[FT_NAME]).exists():
            targets.append({"model": models[FT_NAME]})
        targets += [{"artifact": a} for a in artifact_list(team=team, filters={"pair": pair.pk})
                    if a.perplexity is None and not tried.filter(artifact=a).exists()]
        for target in targets:
            job = self._run(team=team, user=user, kind=Job.Kind.EVALUATE, dataset=dataset, **target)
            label = target.get("model") or f"artifact #{target['artifact'].pk}"
            if job.status == Job.Status.SUCCEEDED:
                self.stdout.write(f"evaluation job #{job.pk} ({label}): perplexity {job.metrics.get('perplexity')}")
            else:
                self.stderr.write(f"evaluation job #{job.pk} ({label}) {job.status}: {job.error}")
