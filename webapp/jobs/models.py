from django.conf import settings
from django.db import models

from webapp.teams.models import Team


class Worker(models.Model):
    """A Celery worker process that reports a heartbeat (``webapp.jobs.worker_services.worker_heartbeat``). A worker
    whose last heartbeat is older than ``DELTAVAULT_WORKER_TIMEOUT`` seconds is gone (selectors decide; rows of
    workers that stopped cleanly are deleted, rows of dead ones are pruned by the sweeper)."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery node name, e.g. cpu@host.")
    hostname = models.CharField(max_length=200, blank=True, default="")
    pid = models.PositiveIntegerField(null=True, blank=True)
    queues = models.JSONField(default=list, blank=True)
    device = models.JSONField(default=dict, blank=True,
                              help_text="cpu_cores; gpu_name and gpu_memory_bytes when torch sees a GPU.")
    held_jobs = models.JSONField(default=list, blank=True,
                                 help_text="Ids of the jobs the worker held (running or waiting to) at the heartbeat.")
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    """One unit of background work. The row is the source of truth for the UI: every websocket message is built
    from it (``webapp.jobs.selectors.job_state``)."""

    class Kind(models.TextChoices):
        COMPRESS = "compress", "Compress"
        DECOMPRESS = "decompress", "Decompress and verify"
        EVALUATE = "evaluate", "Evaluate"
        STORE = "store", "Store compressed"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Queue(models.TextChoices):
        CPU = "cpu", "CPU"
        GPU = "gpu", "GPU"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    queue = models.CharField(max_length=8, choices=Queue.choices, default=Queue.CPU)
    pair = models.ForeignKey("registry.Pair", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    artifact = models.ForeignKey("registry.Artifact", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="input_jobs")
    model = models.ForeignKey("registry.ModelEntry", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="jobs")
    dataset = models.ForeignKey("registry.Dataset", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="jobs")
    gradient_set = models.ForeignKey("registry.GradientSet", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="jobs")
    codec_config = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    progress = models.FloatField(default=0.0)
    stage = models.CharField(max_length=200, blank=True, default="")
    metrics = models.JSONField(default=dict, blank=True)
    log_tail = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False, help_text="Keep the restored copy of a decompress job (it does "
                                                           "not expire).")
    retry_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries")
    celery_task_id = models.CharField(max_length=64, blank=True, default="")
    worker = models.ForeignKey(Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
                               help_text="The worker that runs (or last ran) the job.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="How many times a worker started the job.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "status"], name="job_team_status")]
        constraints = [
            models.CheckConstraint(condition=models.Q(progress__gte=0) & models.Q(progress__lte=100),
                                   name="job_progress_0_100"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def codec_id(self) -> str:
        return (self.codec_config or {}).get("id", "")


# What a submit may ask for: a queue, or "auto" (webapp.jobs.services.job_submit picks one).
QUEUE_AUTO = "auto"
QUEUE_SUBMIT_CHOICES = [*Job.Queue.choices, (QUEUE_AUTO, "Auto")]
