from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from webapp.core.apis import Api, paginated
from webapp.core.pagination import LimitOffsetPagination, get_paginated_response
from webapp.core.teams_api import request_team_filter, request_team_for_write
from webapp.jobs.models import QUEUE_AUTO, QUEUE_SUBMIT_CHOICES, Job
from webapp.jobs.selectors import job_get, job_list, job_state
from webapp.jobs.services import job_cancel, job_delete, job_pin, job_retry, job_submit
from webapp.jobs.worker_selectors import job_queue_warning, worker_list_live_for_user
from webapp.registry.selectors import artifact_get, dataset_get, gradient_set_get, model_get, pair_get


class _JobOutput(serializers.Serializer):
    """The job's state (``webapp.jobs.selectors.job_state``), the same object the websockets send."""

    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=Job.Kind.choices)
    status = serializers.ChoiceField(choices=Job.Status.choices)
    queue = serializers.ChoiceField(choices=Job.Queue.choices)
    progress = serializers.FloatField()
    stage = serializers.CharField()
    metrics = serializers.DictField(help_text="Raw values: bytes, seconds, MB/s.")
    metrics_display = serializers.ListField(child=serializers.DictField(),
                                            help_text="The metrics as the pages show them: key, label, text.")
    error = serializers.CharField()
    log_tail = serializers.CharField()
    codec = serializers.CharField()
    codec_config = serializers.DictField()
    options = serializers.DictField()
    pair_id = serializers.IntegerField(allow_null=True)
    pair_name = serializers.CharField(allow_null=True)
    model_id = serializers.IntegerField(allow_null=True)
    model_name = serializers.CharField(allow_null=True)
    dataset_id = serializers.IntegerField(allow_null=True)
    dataset_name = serializers.CharField(allow_null=True)
    gradient_set_id = serializers.IntegerField(allow_null=True)
    input_artifact_id = serializers.IntegerField(allow_null=True)
    input_artifact_label = serializers.CharField(allow_null=True, help_text="What a decompress or evaluate job read.")
    created_by = serializers.CharField(allow_null=True)
    artifact_id = serializers.IntegerField(allow_null=True, help_text="The artifact this job produced.")
    retry_of_id = serializers.IntegerField(allow_null=True)
    cancel_requested = serializers.BooleanField()
    worker = serializers.CharField(allow_null=True, help_text="The worker that runs (or last ran) the job.")
    attempts = serializers.IntegerField(help_text="How many times a worker started the job.")
    pinned = serializers.BooleanField(help_text="A decompress job's restored copy is kept (it does not expire).")
    restored_expires_at = serializers.DateTimeField(allow_null=True)
    team = serializers.CharField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance):
        return job_state(instance) if isinstance(instance, Job) else super().to_representation(instance)


class _JobQueueCheckedOutput(_JobOutput):
    """The job's state plus whether a live worker serves its queue."""

    queue_warning = serializers.CharField(help_text="Set when no live worker serves the job's queue.")

    def to_representation(self, instance):
        return dict(job_state(instance), queue_warning=job_queue_warning(job=instance))


class JobListApi(Api):
    class FilterSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False)
        status = serializers.MultipleChoiceField(choices=Job.Status.choices, required=False)
        kind = serializers.MultipleChoiceField(choices=Job.Kind.choices, required=False)
        codec = serializers.CharField(required=False, help_text="Codec id, e.g. fmdelta.")
        pair = serializers.IntegerField(required=False)
        model = serializers.IntegerField(required=False, help_text="Jobs on this model or a pair it is in.")
        artifact = serializers.IntegerField(required=False)
        dataset = serializers.IntegerField(required=False)
        who = serializers.CharField(required=False, help_text="Username of who submitted the job.")
        queue = serializers.ChoiceField(choices=Job.Queue.choices, required=False)
        q = serializers.CharField(required=False, help_text="Search: job id, stage, error, codec, names.")

    class OutputSerializer(_JobOutput):
        pass

    @extend_schema(parameters=[FilterSerializer], responses={200: paginated(OutputSerializer, "JobPage")})
    def get(self, request):
        filters = JobListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        query = request.query_params.copy()
        query.pop("team", None)
        jobs = job_list(user=request.user, team=request_team_filter(request), filters=query)
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=JobListApi.OutputSerializer, queryset=jobs,
                                      request=request, view=self)


class JobCreateApi(Api):
    """Submit a job. compress: ``pair`` + ``codec_config``, or ``gradient_set`` + ``codec_config`` (default
    ``{"id": "lmgc"}``, the built-in prior) and optionally ``model`` (a registered causal LM as the prior);
    decompress: ``artifact`` (restores and verifies); evaluate: ``dataset`` + one of ``model`` / ``artifact``."""

    class InputSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False)
        kind = serializers.ChoiceField(choices=Job.Kind.choices)
        pair = serializers.IntegerField(required=False, allow_null=True)
        artifact = serializers.IntegerField(required=False, allow_null=True)
        model = serializers.IntegerField(required=False, allow_null=True)
        dataset = serializers.IntegerField(required=False, allow_null=True)
        gradient_set = serializers.IntegerField(required=False, allow_null=True)
        codec_config = serializers.JSONField(required=False, help_text='e.g. {"id": "fmdelta"} or "zstd"')
        options = serializers.DictField(required=False, help_text='e.g. {"threads": 2}')
        queue = serializers.ChoiceField(
            choices=QUEUE_SUBMIT_CHOICES, default=QUEUE_AUTO,
            help_text="auto: gpu for work that runs models when a live GPU worker serves it, else cpu.")
        repeat = serializers.BooleanField(
            default=False, help_text="Compress even when the pair has an artifact of this codec config (else 400).")

    class OutputSerializer(_JobQueueCheckedOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = JobCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        refs = {
            "pair": pair_get, "artifact": artifact_get, "model": model_get, "dataset": dataset_get,
            "gradient_set": gradient_set_get,
        }
        objects = {key: getter(id=data[key], team=team) if data.get(key) is not None else None
                   for key, getter in refs.items()}
        job = job_submit(team=team, user=request.user, kind=data["kind"], codec_config=data.get("codec_config"),
                         options=data.get("options"), queue=data["queue"], repeat=data["repeat"], **objects)
        return Response(JobCreateApi.OutputSerializer(job).data, status=status.HTTP_201_CREATED)


class JobCollectionApi(JobListApi, JobCreateApi):
    """``GET`` lists (JobListApi), ``POST`` submits (JobCreateApi)."""


class JobDetailApi(Api):
    class OutputSerializer(_JobQueueCheckedOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        return Response(self.OutputSerializer(job_get(id=id, user=request.user)).data)


class JobDeleteApi(Api):
    """Delete a finished job (team admins) and its restored copy; the artifact it made stays."""

    class OutputSerializer(serializers.Serializer):
        jobs = serializers.IntegerField()

    @extend_schema(responses={200: OutputSerializer})
    def delete(self, request, id: int):
        summary = job_delete(job=job_get(id=id, user=request.user), user=request.user)
        return Response(JobDeleteApi.OutputSerializer(summary).data)


class JobItemApi(JobDetailApi, JobDeleteApi):
    """``GET`` shows (JobDetailApi), ``DELETE`` deletes (JobDeleteApi)."""


class JobPinApi(Api):
    """Keep a decompress job's restored copy (``{"pinned": true}``) or let it expire (``false``)."""

    class InputSerializer(serializers.Serializer):
        pinned = serializers.BooleanField(default=True)

    class OutputSerializer(_JobOutput):
        pass

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer})
    def post(self, request, id: int):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = job_pin(job=job_get(id=id, user=request.user), user=request.user,
                      pinned=serializer.validated_data["pinned"])
        return Response(self.OutputSerializer(job).data)


class JobCancelApi(Api):
    """Cancel a queued job, or ask a running one to stop."""

    class OutputSerializer(_JobOutput):
        pass

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request, id: int):
        job = job_cancel(job=job_get(id=id, user=request.user), user=request.user)
        return Response(self.OutputSerializer(job).data)


class JobRetryApi(Api):
    """Submit a new job with the inputs of a failed or cancelled one."""

    class OutputSerializer(_JobOutput):
        pass

    @extend_schema(request=None, responses={201: OutputSerializer})
    def post(self, request, id: int):
        job = job_retry(job=job_get(id=id, user=request.user), user=request.user)
        return Response(self.OutputSerializer(job).data, status=status.HTTP_201_CREATED)


class WorkerListApi(Api):
    """The live workers (a heartbeat within ``DELTAVAULT_WORKER_TIMEOUT`` seconds): queues, device, the jobs
    they run now (ids only for jobs of other teams are left out)."""

    class OutputSerializer(serializers.Serializer):
        class CurrentJob(serializers.Serializer):
            id = serializers.IntegerField()
            kind = serializers.CharField()
            progress = serializers.FloatField()

        name = serializers.CharField()
        hostname = serializers.CharField()
        queues = serializers.ListField(child=serializers.CharField())
        device = serializers.DictField(help_text="cpu_cores; gpu_name, gpu_memory_bytes when torch sees a GPU.")
        current_jobs = CurrentJob(many=True, help_text="Running jobs of your teams on this worker.")
        running_jobs = serializers.IntegerField(help_text="Running jobs of all teams on this worker.")
        started_at = serializers.DateTimeField()
        last_heartbeat = serializers.DateTimeField()

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request):
        workers = worker_list_live_for_user(user=request.user)
        return Response(self.OutputSerializer(workers, many=True).data)
