"""BitDelta compress jobs: the calibration dataset checked at submit, the loss of every step on the row and in the
published events, cancel within a step with nothing left behind, and lossy verification with per-tensor error."""

from __future__ import annotations

import shutil

import pytest

from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.reporter import JobReporter
from webapp.jobs.services import job_run, job_submit
from webapp.registry.models import Artifact
from webapp.registry.services import dataset_register_from_path, model_register_from_path, pair_create

pytestmark = pytest.mark.django_db
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

STEPS = 6
CONFIG = {"id": "bitdelta", "steps": STEPS, "batch_size": 2, "seq_len": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def lm_folders(tmp_path_factory):
    from modelcodecs import synthetic

    root = tmp_path_factory.mktemp("lm")
    pair = synthetic.make_tiny_transformer_pair(root / "pair", steps=2, base_steps=0, d_model=16, n_layer=1, seed=2)
    text = synthetic.write_text_dataset(root / "calibration.txt", n_lines=200, seed=5, domain="chat")
    return pair.base, pair.finetuned, text


@pytest.fixture
def lm(world, dv_dirs, lm_folders):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    team, user = world["acme"], world["alice"]
    paths = {}
    for name, source in zip(("base", "ft", "calibration.txt"), lm_folders):
        target = dv_dirs["acme"] / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
        paths[name] = target
    base = model_register_from_path(team=team, user=user, name="base", path=str(paths["base"]))
    ft = model_register_from_path(team=team, user=user, name="ft", path=str(paths["ft"]))
    short = dv_dirs["acme"] / "short.txt"
    short.write_text("a few words only\n", encoding="utf-8")
    yield {"pair": pair_create(team=team, user=user, name="lm", base=base, finetuned=ft),
           "text": dataset_register_from_path(team=team, user=user, name="calib", path=str(paths["calibration.txt"])),
           "short": dataset_register_from_path(team=team, user=user, name="short", path=str(short))}
    torch.set_num_threads(threads)


def _submit(world, lm, **kwargs) -> Job:
    return job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=lm["pair"], **kwargs)


class BitDeltaJobSubmitTests:
    def test_the_dataset_is_required_long_enough_and_refused_where_unused(self, world, lm):
        with pytest.raises(ApplicationError, match="choose a dataset"):
            _submit(world, lm, codec_config=CONFIG)
        with pytest.raises(ApplicationError, match="needs steps x batch_size x seq_len = 192") as info:
            _submit(world, lm, codec_config=CONFIG, dataset=lm["short"])
        assert info.value.extra["needed"] == 192 and info.value.extra["tokens"] < 192
        with pytest.raises(ApplicationError, match="uses no dataset"):
            _submit(world, lm, codec_config={"id": "fmdelta"}, dataset=lm["text"])
        assert not Job.objects.exists()
        job = _submit(world, lm, codec_config={**CONFIG, "steps": 0})  # Initial: no text needed
        assert job.dataset is None and job.codec_config["steps"] == 0
        job = _submit(world, lm, codec_config=CONFIG, dataset=lm["text"])
        assert job.dataset == lm["text"] and job.codec_config == {**job.codec_config, **CONFIG}


class BitDeltaJobRunTests:
    def test_every_steps_loss_reaches_the_row_and_the_events(self, world, lm, collect_events, dv_dirs):
        job = _submit(world, lm, codec_config=CONFIG, dataset=lm["text"])
        events = collect_events(f"job-{job.pk}")
        job = job_run(job=job)
        assert job.status == Job.Status.SUCCEEDED, job.error + job.log_tail
        curve = job.metrics["training_loss"]
        assert [step for step, _ in curve] == list(range(1, STEPS + 1))
        assert job.metrics["prepared"]["initial_loss"] == curve[0][1]
        assert job.metrics["prepared"]["final_loss"] == curve[-1][1]
        running = [e["job"]["metrics"].get("training_loss", []) for e in events.drain()
                   if e["job"]["status"] == "running"]
        lengths = [len(c) for c in running]
        assert lengths == sorted(lengths) and lengths[-1] == STEPS and any(0 < n < STEPS for n in lengths)
        artifact = Artifact.objects.get(job=job)
        assert artifact.codec_id == "bitdelta" and artifact.ratio > 1

        verify = job_run(job=job_submit(team=world["acme"], user=world["alice"], kind="decompress",
                                        artifact=artifact))
        assert verify.status == Job.Status.SUCCEEDED, verify.error
        verification = verify.metrics["verification"]
        assert verification["status"] == "lossy" and verification["mismatched"] == []
        assert verification["tensor_errors"] and 0 < verification["worst_relative_delta_error"] < 1.5
        assert "losslessly coded tensors verified" in verification["message"]

    def test_cancel_during_distillation_stops_within_a_step_and_leaves_nothing(self, world, lm, dv_dirs,
                                                                              monkeypatch):
        job = _submit(world, lm, codec_config={**CONFIG, "steps": 40}, dataset=lm["text"])
        record = JobReporter.training_step

        def step_then_cancel(self, point):
            record(self, point)
            if point["step"] == 2:
                Job.objects.filter(pk=self.job.pk).update(cancel_requested=True)

        monkeypatch.setattr(JobReporter, "training_step", step_then_cancel)
        job = job_run(job=job)
        assert job.status == Job.Status.CANCELLED
        assert job.metrics["training_step"] == 2  # the cancel check before step 3 stopped it
        assert not Artifact.objects.exists()
        assert not [p for p in dv_dirs["artifacts"].rglob("*") if p.is_file()] if dv_dirs["artifacts"].exists() \
            else True
        assert not (dv_dirs["home"] / "tmp" / f"job-{job.pk}").exists()
