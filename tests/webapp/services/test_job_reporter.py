import pytest

from tests.factories import job_create
from webapp.jobs.models import Job
from webapp.jobs.reporter import JobReporter

pytestmark = pytest.mark.django_db


class JobReporterTests:
    def test_throttles_writes_but_always_writes_100(self, world, settings, collect_events):
        settings.DELTAVAULT_PROGRESS_INTERVAL = 3600
        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        events = collect_events(f"job-{job.pk}")
        reporter = JobReporter(job)
        reporter(10, 100, "encoding")  # first report writes (nothing written yet)
        for done in range(11, 100):
            reporter(done, 100, "encoding")
        assert Job.objects.get(pk=job.pk).progress == 10
        reporter(100, 100, "encoding")
        job.refresh_from_db()
        assert job.progress == 100 and job.stage == "encoding"
        assert [e["job"]["progress"] for e in events.drain()] == [10, 100]

    def test_progress_never_goes_back_and_spans_map(self, world, settings):
        settings.DELTAVAULT_PROGRESS_INTERVAL = 0
        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        reporter = JobReporter(job, span=(50, 100))
        reporter(50, 100, "eval")
        assert Job.objects.get(pk=job.pk).progress == 75
        reporter(0, 0, "writing index")
        assert Job.objects.get(pk=job.pk).progress == 75

    def test_log_tail_keeps_the_last_lines(self, world):
        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        reporter = JobReporter(job)
        for i in range(200):
            reporter.log(f"line {i}")
        reporter.flush()
        tail = Job.objects.get(pk=job.pk).log_tail.splitlines()
        assert len(tail) == 60 and tail[-1].endswith("line 199")

    def test_cancel_check_reads_the_row_throttled(self, world, settings, django_assert_num_queries):
        settings.DELTAVAULT_CANCEL_CHECK_INTERVAL = 3600
        job = job_create(team=world["acme"], status=Job.Status.RUNNING)
        reporter = JobReporter(job)
        with django_assert_num_queries(1):
            assert reporter.cancelled() is False
            for _ in range(100):
                assert reporter.cancelled() is False
        Job.objects.filter(pk=job.pk).update(cancel_requested=True)
        settings.DELTAVAULT_CANCEL_CHECK_INTERVAL = 0
        reporter = JobReporter(job)
        assert reporter.cancelled() is True
