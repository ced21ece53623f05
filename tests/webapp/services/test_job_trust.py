"""Jobs people can trust (issue 11 §2, §3, §5): identical artifacts are recognised and a repeat is refused at
submit; peak memory is the job's own; live metrics while running; a model changed on disk fails the job with a
clear message, and a rescan brings the registry up to date."""

from __future__ import annotations

import os
from unittest import mock

import modelcodecs
import pytest

from webapp.core.exceptions import ApplicationError
from webapp.jobs.models import Job
from webapp.jobs.reporter import JobReporter
from webapp.jobs.services import job_retry, job_run, job_submit
from webapp.registry.models import Artifact
from webapp.registry.selectors import model_changes
from webapp.registry.services import model_register_from_path, model_rescan, pair_create

pytestmark = pytest.mark.django_db

ZSTD = {"id": "zstd", "level": 3, "chunk_bytes": 4 << 20}


@pytest.fixture
def pair(world, tiny_pair_dirs):
    base_dir, ft_dir = tiny_pair_dirs
    team, user = world["acme"], world["alice"]
    base = model_register_from_path(team=team, user=user, name="base", path=str(base_dir))
    ft = model_register_from_path(team=team, user=user, name="ft", path=str(ft_dir))
    return pair_create(team=team, user=user, name="tiny", base=base, finetuned=ft)


def _submit(world, pair, **kwargs) -> Job:
    with mock.patch("webapp.jobs.services.run_job_task"):
        return job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=pair,
                          codec_config=ZSTD, **kwargs)


class IdenticalArtifactTests:
    def test_a_repeat_is_refused_at_submit_and_recognised_when_forced(self, world, pair, dv_dirs):
        first = job_run(job=_submit(world, pair))
        assert first.status == "succeeded", first.error
        artifact = Artifact.objects.get(job=first)
        assert len(artifact.content_sha256) == 64

        with pytest.raises(ApplicationError) as err:
            _submit(world, pair)
        assert f"artifact #{artifact.pk} of pair tiny" in err.value.message
        assert err.value.extra == {"artifact": artifact.pk}

        again = job_run(job=_submit(world, pair, repeat=True))
        assert again.status == "succeeded", again.error
        assert Artifact.objects.filter(pair=pair).count() == 1  # not stored twice
        assert again.metrics["identical_artifact_id"] == artifact.pk
        assert "not stored twice" in again.log_tail
        assert [p.name for p in (dv_dirs["artifacts"] / "acme").iterdir()] == [artifact.storage_name.split("/")[-1]]

    def test_other_options_are_another_artifact(self, world, pair):
        job_run(job=_submit(world, pair))
        with mock.patch("webapp.jobs.services.run_job_task"):
            other = job_submit(team=world["acme"], user=world["alice"], kind="compress", pair=pair,
                               codec_config={**ZSTD, "level": 5})
        job_run(job=other)
        labels = sorted(a.label for a in Artifact.objects.filter(pair=pair))
        assert labels[0].startswith("zstd (chunk_bytes=4194304, level=3) artifact #")
        assert labels[1].startswith("zstd (chunk_bytes=4194304, level=5) artifact #")

    def test_retry_is_an_explicit_repeat(self, world, pair):
        job_run(job=_submit(world, pair))
        failed = Job.objects.create(team=world["acme"], kind="compress", pair=pair, codec_config=ZSTD,
                                    status=Job.Status.FAILED)
        with mock.patch("webapp.jobs.services.run_job_task"):
            assert job_retry(job=failed, user=world["alice"]).retry_of == failed


class PeakMemoryTests:
    def test_the_job_resets_the_peak_and_reports_its_own(self, world, pair):
        calls = []
        with mock.patch("webapp.jobs.services.reset_peak_rss", side_effect=lambda: calls.append("reset") or True), \
                mock.patch("webapp.jobs.services.peak_rss", return_value=12345):
            job = job_run(job=_submit(world, pair))
        assert calls == ["reset"]
        assert job.metrics["peak_rss_bytes"] == 12345

    def test_no_figure_when_the_peak_cannot_be_reset(self, world, pair):
        with mock.patch("webapp.jobs.services.reset_peak_rss", return_value=False):
            job = job_run(job=_submit(world, pair))
        assert "peak_rss_bytes" not in job.metrics and "peak memory not measured" in job.log_tail

    def test_vmhwm_really_resets(self):
        from modelcodecs.memory import peak_rss, reset_peak_rss

        if not os.path.exists("/proc/self/clear_refs"):
            pytest.skip("Linux only")
        block = bytearray(64 << 20)  # touch 64 MiB, then free it
        block[::4096] = b"x" * len(block[::4096])
        high = peak_rss()
        del block
        assert reset_peak_rss()
        assert peak_rss() < high - (32 << 20)


class LiveMetricsTests:
    def test_elapsed_throughput_and_eta_are_written_while_running(self, world, settings):
        settings.DELTAVAULT_PROGRESS_INTERVAL = 0.0
        job = Job.objects.create(team=world["acme"], kind="compress", status=Job.Status.RUNNING)
        reporter = JobReporter(job)
        clock = iter([100.0, 102.0, 104.0])
        reporter.clock = lambda: next(clock)
        reporter._started = 100.0
        reporter(0, 8_000_000, "compressing a")
        reporter(2_000_000, 8_000_000, "compressing a")
        reporter(4_000_000, 8_000_000, "compressing b")
        job.refresh_from_db()
        assert job.metrics["elapsed_s"] == 4.0
        assert job.metrics["mb_per_s"] == pytest.approx(4 / 4 * 1.0, rel=0.01)  # 4 MB in 4 s since the step began
        assert job.metrics["eta_s"] == pytest.approx(4.0)  # half done in 4 s


class ModelChangedOnDiskTests:
    def test_a_changed_finetune_fails_the_job_and_a_rescan_fixes_the_record(self, world, pair):
        weights = os.path.join(pair.finetuned.path, "model.safetensors")
        with open(weights, "ab") as fh:
            fh.write(b"\0" * 8)
        changes = model_changes(model=pair.finetuned)
        assert changes and "bytes when registered" in changes[0]

        job = job_run(job=_submit(world, pair))
        assert job.status == "failed"
        assert job.error.startswith("Model ft changed on disk since it was registered")
        assert f"/models/{pair.finetuned.pk}/" in job.error and "rescan" in job.error
        assert not Artifact.objects.exists()

    def test_same_size_new_mtime_is_a_change(self, world, pair):
        weights = os.path.join(pair.base.path, "model.safetensors")
        stat = os.stat(weights)
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        assert model_changes(model=pair.base) == ["model.safetensors was modified since it was registered"]
        rescanned = model_rescan(model=pair.base, user=world["mallory"])
        assert model_changes(model=rescanned) == []
        job = job_run(job=_submit(world, pair))
        assert job.status == "succeeded", job.error

    def test_missing_folder(self, world, pair, tmp_path):
        pair.finetuned.path = str(tmp_path / "gone")
        assert model_changes(model=pair.finetuned) == [f"the folder {tmp_path / 'gone'} does not exist"]
