from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from webapp.core.apis import Api, paginated
from webapp.core.pagination import LimitOffsetPagination, get_paginated_response
from webapp.core.teams_api import request_team_filter, request_team_for_write
from webapp.jobs.apis import _JobQueueCheckedOutput
from webapp.registry.models import Dataset
from webapp.registry.selectors import (
    artifact_get,
    artifact_list,
    dataset_get,
    dataset_list,
    model_changes,
    model_stored_bytes,
    gradient_set_get,
    gradient_set_list,
    gradient_set_rate_table,
    model_get,
    model_list,
    pair_comparison,
    pair_get,
    pair_list,
)
from webapp.registry.services import (
    artifact_delete,
    artifact_download_name,
    artifact_import,
    artifact_open,
    dataset_delete,
    dataset_register_from_path,
    dataset_upload,
    model_delete,

    gradient_set_register_from_path,
    gradient_set_register_upload,
    model_register_from_path,
    model_register_upload,
    model_rescan,
    model_store_submit,
    pair_create,
    pair_delete,
)

TEAM_PARAM = OpenApiParameter("team", str, description="Only this team's (slug); default: all your teams.")


class _DeleteOutput(serializers.Serializer):
    models = serializers.IntegerField(required=False)
    pairs = serializers.IntegerField(required=False)
    artifacts = serializers.IntegerField(required=False)
    datasets = serializers.IntegerField(required=False)
    bytes_freed = serializers.IntegerField(help_text="Bytes of artifact storage and uploaded files freed.")


class _WithArtifactsFilter(serializers.Serializer):
    with_artifacts = serializers.BooleanField(
        required=False, default=False,
        help_text="Also delete the artifacts that need it (otherwise they block the delete: 400 lists them).")


class _TeamSlugField(serializers.SlugField):
    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Team slug; may be left out when you are in one team only.")
        super().__init__(**kwargs)


# ---- models --------------------------------------------------------------------------------------------------
class _ModelOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    name = serializers.CharField()
    path = serializers.CharField()
    source = serializers.CharField()
    layout = serializers.CharField()
    architecture = serializers.CharField()
    model_type = serializers.CharField()
    dtypes = serializers.DictField(child=serializers.IntegerField())
    parameter_count = serializers.IntegerField()
    tensor_count = serializers.IntegerField()
    total_bytes = serializers.IntegerField()
    files = serializers.ListField(child=serializers.DictField())
    changes = serializers.SerializerMethodField(help_text="How the folder differs from what was registered (empty: "
                                                          "unchanged); jobs using a changed model fail.")
    storage = serializers.CharField(help_text="folder: read where it is; compressed: the registry keeps it in the "
                                              "team's tensor store (total_bytes stays the logical size).")
    stored_bytes = serializers.SerializerMethodField(
        help_text="Bytes on disk of every tensor-store object the model needs (shared ones included); 0 for a "
                  "folder.")
    unique_stored_bytes = serializers.SerializerMethodField(
        help_text="Bytes on disk no other model shares: what deleting the model frees in the tensor store.")
    created_at = serializers.DateTimeField()

    def get_changes(self, model) -> list[str]:
        return model_changes(model=model)

    def _stored(self, model) -> dict:
        cache = self.context.setdefault("stored_bytes", {})
        if model.pk not in cache:
            cache[model.pk] = model_stored_bytes(model=model)
        return cache[model.pk]

    def get_stored_bytes(self, model) -> int:
        return self._stored(model)["stored_bytes"]

    def get_unique_stored_bytes(self, model) -> int:
        return self._stored(model)["unique_stored_bytes"]


def _store_compressed_field() -> serializers.BooleanField:
    return serializers.BooleanField(
        required=False, default=False,
        help_text="Also queue a store job: the registry keeps the model in the team's tensor store (identical "
                  "tensors once) and restores it on demand; an uploaded folder is removed once stored.")


class ModelListApi(Api):
    class FilterSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False)
        name = serializers.CharField(required=False)
        architecture = serializers.CharField(required=False)
        source = serializers.CharField(required=False)

    class OutputSerializer(_ModelOutput):
        pass

    @extend_schema(parameters=[FilterSerializer], responses={200: paginated(OutputSerializer, "ModelPage")})
    def get(self, request):
        filters = ModelListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        models = model_list(user=request.user, team=request_team_filter(request), filters=filters.validated_data)
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=ModelListApi.OutputSerializer, queryset=models,
                                      request=request, view=self)


class ModelCreateApi(Api):
    """Register a model folder that is already on the server (inside the configured model roots)."""

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1024)
        store_compressed = _store_compressed_field()

    class OutputSerializer(_ModelOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = ModelCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        entry = model_register_from_path(team=team, user=request.user, name=data["name"], path=data["path"],
                                         store_compressed=data["store_compressed"])
        return Response(ModelCreateApi.OutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class ModelCollectionApi(ModelListApi, ModelCreateApi):
    """``GET`` lists (ModelListApi), ``POST`` registers from a server path (ModelCreateApi)."""


class ModelUploadApi(Api):
    """Upload a model folder's files (multipart, field ``files`` repeated): *.safetensors, *.json, tokenizer
    files."""

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)
        store_compressed = _store_compressed_field()

    class OutputSerializer(_ModelOutput):
        pass

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: OutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data={**request.data.dict(), "files": request.FILES.getlist("files")})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        entry = model_register_upload(team=team, user=request.user, name=data["name"], files=data["files"],
                                      store_compressed=data["store_compressed"])
        return Response(self.OutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class ModelDetailApi(Api):
    class OutputSerializer(_ModelOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        return Response(self.OutputSerializer(model_get(id=id, user=request.user)).data)


class ModelDeleteApi(Api):
    """Unregister a model (team admins) with the pairs it is in; their artifacts block unless
    ``?with_artifacts=true``."""

    class OutputSerializer(_DeleteOutput):
        pass

    @extend_schema(parameters=[_WithArtifactsFilter], responses={200: OutputSerializer})
    def delete(self, request, id: int):
        params = _WithArtifactsFilter(data=request.query_params)
        params.is_valid(raise_exception=True)
        summary = model_delete(model=model_get(id=id, user=request.user), user=request.user,
                               with_artifacts=params.validated_data["with_artifacts"])
        return Response(ModelDeleteApi.OutputSerializer(summary).data)


class ModelRescanApi(Api):
    """Read a registered model folder again (sizes, hashes, modification times) after it changed on disk."""

    class OutputSerializer(_ModelOutput):
        pass

    @extend_schema(request=None, responses={200: OutputSerializer})
    def post(self, request, id: int):
        entry = model_rescan(model=model_get(id=id, user=request.user), user=request.user)
        return Response(self.OutputSerializer(entry).data)


class ModelStoreApi(Api):
    """Queue a store job: the model goes into the team's tensor store (tensors other models hold already are
    referenced, not written again); its progress streams like any job's."""

    @extend_schema(request=None, responses={201: _JobQueueCheckedOutput})
    def post(self, request, id: int):
        job = model_store_submit(model=model_get(id=id, user=request.user), user=request.user)
        return Response(_JobQueueCheckedOutput(job).data, status=status.HTTP_201_CREATED)


class ModelItemApi(ModelDetailApi, ModelDeleteApi):
    """``GET`` shows (ModelDetailApi), ``DELETE`` deletes (ModelDeleteApi)."""


# ---- pairs ---------------------------------------------------------------------------------------------------
class _ModelRef(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class _PairOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    name = serializers.CharField()
    base = _ModelRef()
    finetuned = _ModelRef()
    report = serializers.DictField()
    created_at = serializers.DateTimeField()


class PairListApi(Api):
    class FilterSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False)
        name = serializers.CharField(required=False)
        model = serializers.IntegerField(required=False, help_text="Pairs with this model as base or fine-tune.")

    class OutputSerializer(_PairOutput):
        pass

    @extend_schema(parameters=[FilterSerializer], responses={200: paginated(OutputSerializer, "PairPage")})
    def get(self, request):
        filters = PairListApi.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        pairs = pair_list(user=request.user, team=request_team_filter(request), filters=filters.validated_data)
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=PairListApi.OutputSerializer, queryset=pairs,
                                      request=request, view=self)


class PairCreateApi(Api):
    """Pair a base model with a fine-tune of it (both in the team; checked compatible)."""

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        base = serializers.IntegerField(help_text="Model id of the base.")
        finetuned = serializers.IntegerField(help_text="Model id of the fine-tune.")

    class OutputSerializer(_PairOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = PairCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        pair = pair_create(team=team, user=request.user, name=data["name"],
                           base=model_get(id=data["base"], team=team),
                           finetuned=model_get(id=data["finetuned"], team=team))
        return Response(PairCreateApi.OutputSerializer(pair).data, status=status.HTTP_201_CREATED)


class PairCollectionApi(PairListApi, PairCreateApi):
    """``GET`` lists (PairListApi), ``POST`` creates (PairCreateApi)."""


class PairDetailApi(Api):
    class OutputSerializer(_PairOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        return Response(self.OutputSerializer(pair_get(id=id, user=request.user)).data)


class PairDeleteApi(Api):
    """Delete a pair (team admins); its artifacts block unless ``?with_artifacts=true``."""

    class OutputSerializer(_DeleteOutput):
        pass

    @extend_schema(parameters=[_WithArtifactsFilter], responses={200: OutputSerializer})
    def delete(self, request, id: int):
        params = _WithArtifactsFilter(data=request.query_params)
        params.is_valid(raise_exception=True)
        summary = pair_delete(pair=pair_get(id=id, user=request.user), user=request.user,
                              with_artifacts=params.validated_data["with_artifacts"])
        return Response(PairDeleteApi.OutputSerializer(summary).data)


class PairItemApi(PairDetailApi, PairDeleteApi):
    """``GET`` shows (PairDetailApi), ``DELETE`` deletes (PairDeleteApi)."""


class PairComparisonApi(Api):
    """Which artifact of the pair to keep: every artifact with its size and its quality (original -> restored) on
    a dataset, the Pareto front, and the smallest artifact within a quality tolerance."""

    class FilterSerializer(serializers.Serializer):
        dataset = serializers.IntegerField(required=False, help_text="default: the dataset most artifacts were "
                                           "evaluated on")
        tolerance_pct = serializers.FloatField(required=False, default=1.0, min_value=0.0,
                                               help_text="perplexity may be this many % above the original")
        tolerance_points = serializers.FloatField(required=False, default=0.5, min_value=0.0,
                                                  help_text="accuracy may be this many points below the original")

    class OutputSerializer(serializers.Serializer):
        class RowSerializer(serializers.Serializer):
            class ChangeSerializer(serializers.Serializer):
                metric = serializers.CharField()
                original = serializers.FloatField()
                restored = serializers.FloatField()
                delta = serializers.FloatField()

            artifact_id = serializers.IntegerField()
            job_id = serializers.IntegerField(allow_null=True)
            codec = serializers.CharField()
            label = serializers.CharField(help_text="codec with its options; BitDelta: initial or distilled")
            options = serializers.JSONField()
            lossless = serializers.BooleanField(allow_null=True)
            bits_per_weight = serializers.FloatField(allow_null=True)
            ratio = serializers.FloatField()
            compressed_bytes = serializers.IntegerField()
            original_bytes = serializers.IntegerField()
            mb_per_s = serializers.FloatField(allow_null=True)
            seconds = serializers.FloatField(allow_null=True)
            verification = serializers.CharField()
            score = serializers.FloatField(allow_null=True)
            changes = ChangeSerializer(many=True)
            raw_fallback = serializers.ListField(child=serializers.CharField())

        class DatasetSerializer(serializers.Serializer):
            id = serializers.IntegerField()
            name = serializers.CharField()
            kind = serializers.CharField()

        pair_id = serializers.IntegerField()
        weights = serializers.IntegerField()
        dataset = DatasetSerializer(allow_null=True)
        datasets = DatasetSerializer(many=True)
        metric = serializers.CharField(allow_null=True)
        higher_is_better = serializers.BooleanField()
        original = serializers.JSONField(allow_null=True)
        tolerance = serializers.JSONField()
        rows = RowSerializer(many=True)
        pareto = serializers.ListField(child=serializers.IntegerField())
        within = serializers.ListField(child=serializers.IntegerField())
        recommended = serializers.IntegerField(allow_null=True)

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer})
    def get(self, request, id: int):
        pair = pair_get(id=id, user=request.user)
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = filters.validated_data
        dataset = dataset_get(id=data["dataset"], team=pair.team) if data.get("dataset") else None
        view = pair_comparison(pair=pair, dataset=dataset, tolerance_pct=data["tolerance_pct"],
                               tolerance_points=data["tolerance_points"])
        return Response(self.OutputSerializer(view).data)


# ---- datasets ------------------------------------------------------------------------------------------------
class _DatasetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    name = serializers.CharField()
    path = serializers.CharField()
    source = serializers.CharField()
    size_bytes = serializers.IntegerField()
    sha256 = serializers.CharField()
    kind = serializers.CharField()
    info = serializers.JSONField()
    created_at = serializers.DateTimeField()


class DatasetListApi(Api):
    class OutputSerializer(_DatasetOutput):
        pass

    @extend_schema(parameters=[TEAM_PARAM], responses={200: paginated(OutputSerializer, "DatasetPage")})
    def get(self, request):
        datasets = dataset_list(user=request.user, team=request_team_filter(request))
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=DatasetListApi.OutputSerializer, queryset=datasets,
                                      request=request, view=self)


class DatasetCreateApi(Api):
    """Register a text file that is already on the server (inside the configured roots)."""

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1024)
        kind = serializers.ChoiceField(choices=Dataset.Kind.choices, default=Dataset.Kind.TEXT)

    class OutputSerializer(_DatasetOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = DatasetCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        dataset = dataset_register_from_path(team=team, user=request.user, name=data["name"], path=data["path"],
                                             kind=data["kind"])
        return Response(DatasetCreateApi.OutputSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetCollectionApi(DatasetListApi, DatasetCreateApi):
    """``GET`` lists (DatasetListApi), ``POST`` registers from a server path (DatasetCreateApi)."""


class DatasetUploadApi(Api):
    """Upload a UTF-8 text file (multipart field ``file``)."""

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        file = serializers.FileField()
        kind = serializers.ChoiceField(choices=Dataset.Kind.choices, default=Dataset.Kind.TEXT)

    class OutputSerializer(_DatasetOutput):
        pass

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: OutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        dataset = dataset_upload(team=team, user=request.user, name=data["name"], file=data["file"],
                                 kind=data["kind"])
        return Response(self.OutputSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailApi(Api):
    class OutputSerializer(_DatasetOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        return Response(self.OutputSerializer(dataset_get(id=id, user=request.user)).data)


class DatasetDeleteApi(Api):
    """Unregister a dataset (team admins); an uploaded one's file is removed."""

    class OutputSerializer(_DeleteOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def delete(self, request, id: int):
        summary = dataset_delete(dataset=dataset_get(id=id, user=request.user), user=request.user)
        return Response(DatasetDeleteApi.OutputSerializer(summary).data)


class DatasetItemApi(DatasetDetailApi, DatasetDeleteApi):
    """``GET`` shows (DatasetDetailApi), ``DELETE`` deletes (DatasetDeleteApi)."""


# ---- artifacts -----------------------------------------------------------------------------------------------
class _ArtifactOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    pair_id = serializers.IntegerField(allow_null=True)
    pair_name = serializers.CharField(source="pair.name", allow_null=True, default=None)
    gradient_set_id = serializers.IntegerField(allow_null=True)
    job_id = serializers.IntegerField(allow_null=True)
    source = serializers.CharField()
    codec_id = serializers.CharField()
    codec_config = serializers.DictField()
    label = serializers.CharField(help_text="e.g. 'fmdelta (chunk_elements=262144) artifact #3 of pair demo'")
    content_sha256 = serializers.CharField()
    sha256 = serializers.CharField(help_text="sha256 of the whole file, checked before every restore")
    original_bytes = serializers.IntegerField()
    compressed_bytes = serializers.IntegerField()
    ratio = serializers.FloatField()
    verification = serializers.CharField()
    verified_at = serializers.DateTimeField(allow_null=True)
    metrics = serializers.DictField()
    perplexity = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()
    download_url = serializers.SerializerMethodField()

    def get_download_url(self, artifact) -> str:
        from django.urls import reverse

        return reverse("api:registry:artifact-download", kwargs={"id": artifact.pk})


class ArtifactListApi(Api):
    class FilterSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False)
        pair = serializers.IntegerField(required=False)
        codec = serializers.CharField(required=False)
        verification = serializers.CharField(required=False)

    class OutputSerializer(_ArtifactOutput):
        pass

    @extend_schema(parameters=[FilterSerializer], responses={200: paginated(OutputSerializer, "ArtifactPage")})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        artifacts = artifact_list(user=request.user, team=request_team_filter(request),
                                  filters=filters.validated_data)
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=self.OutputSerializer, queryset=artifacts,
                                      request=request, view=self)


class ArtifactDetailApi(Api):
    class OutputSerializer(_ArtifactOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        return Response(self.OutputSerializer(artifact_get(id=id, user=request.user)).data)


class ArtifactDownloadApi(Api):
    """The artifact file (``.dvz``), streamed."""

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request, id: int):
        artifact = artifact_get(id=id, user=request.user)
        response = FileResponse(artifact_open(artifact=artifact), as_attachment=True,
                                filename=artifact_download_name(artifact), content_type="application/octet-stream")
        return response


class ArtifactDeleteApi(Api):
    """Delete an artifact (team admins): its row and its file in the artifacts storage."""

    class OutputSerializer(_DeleteOutput):
        pass

    @extend_schema(responses={200: OutputSerializer})
    def delete(self, request, id: int):
        summary = artifact_delete(artifact=artifact_get(id=id, user=request.user), user=request.user)
        return Response(ArtifactDeleteApi.OutputSerializer(summary).data)


class ArtifactItemApi(ArtifactDetailApi, ArtifactDeleteApi):
    """``GET`` shows (ArtifactDetailApi), ``DELETE`` deletes (ArtifactDeleteApi)."""


class ArtifactImportApi(Api):
    """Import an artifact made with the CLI (``modelcodecs compress``) as an artifact of a pair (multipart field
    ``file``). It is decoded against the pair's base and checked against the fine-tuned model's recorded hashes
    before it is accepted; a file that fails answers 400 and nothing is stored."""

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        pair = serializers.IntegerField(help_text="Id of the pair the artifact was made from.")
        file = serializers.FileField()

    class OutputSerializer(_ArtifactOutput):
        pass

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: OutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        artifact = artifact_import(team=team, user=request.user, pair=pair_get(id=data["pair"], team=team),
                                   file=data["file"])
        return Response(self.OutputSerializer(artifact).data, status=status.HTTP_201_CREATED)


# ---- gradient sets -------------------------------------------------------------------------------------------
class _GradientSetOutput(serializers.Serializer):
    id = serializers.IntegerField()
    team = serializers.CharField(source="team.slug")
    name = serializers.CharField()
    path = serializers.CharField()
    source = serializers.CharField()
    description = serializers.CharField()
    steps = serializers.ListField(child=serializers.IntegerField())
    tensor_count = serializers.IntegerField()
    float_count = serializers.IntegerField()
    dtypes = serializers.DictField(child=serializers.IntegerField())
    total_bytes = serializers.IntegerField()
    non_float_tensors = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()


class GradientSetListApi(Api):
    class OutputSerializer(_GradientSetOutput):
        pass

    @extend_schema(parameters=[TEAM_PARAM], responses={200: paginated(OutputSerializer, "GradientSetPage")})
    def get(self, request):
        sets = gradient_set_list(user=request.user, team=request_team_filter(request))
        return get_paginated_response(pagination_class=LimitOffsetPagination,
                                      serializer_class=GradientSetListApi.OutputSerializer, queryset=sets,
                                      request=request, view=self)


class GradientSetCreateApi(Api):
    """Register a folder of gradient safetensors files (one per step) that is on the server, inside the team's
    folders (``<root>/<team slug>/``)."""

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        path = serializers.CharField(max_length=1024)
        description = serializers.CharField(required=False, allow_blank=True, default="")

    class OutputSerializer(_GradientSetOutput):
        pass

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request):
        serializer = GradientSetCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        entry = gradient_set_register_from_path(team=team, user=request.user, name=data["name"], path=data["path"],
                                                description=data["description"])
        return Response(GradientSetCreateApi.OutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class GradientSetCollectionApi(GradientSetListApi, GradientSetCreateApi):
    """``GET`` lists (GradientSetListApi), ``POST`` registers from a server path (GradientSetCreateApi)."""


class GradientSetUploadApi(Api):
    """Upload gradient files (multipart, field ``files`` repeated; *.safetensors only)."""

    parser_classes = [MultiPartParser, FormParser]

    class InputSerializer(serializers.Serializer):
        team = _TeamSlugField()
        name = serializers.CharField(max_length=200)
        files = serializers.ListField(child=serializers.FileField(), allow_empty=False)

    class OutputSerializer(_GradientSetOutput):
        pass

    @extend_schema(request={"multipart/form-data": InputSerializer}, responses={201: OutputSerializer})
    def post(self, request):
        serializer = self.InputSerializer(data={**request.data.dict(), "files": request.FILES.getlist("files")})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = request_team_for_write(request, data.get("team"))
        entry = gradient_set_register_upload(team=team, user=request.user, name=data["name"], files=data["files"])
        return Response(self.OutputSerializer(entry).data, status=status.HTTP_201_CREATED)


class GradientSetDetailApi(Api):
    """A gradient set with its parameters and the rate table of every codec (and prior) run on it."""

    class OutputSerializer(_GradientSetOutput):
        class RateSerializer(serializers.Serializer):
            artifact_id = serializers.IntegerField()
            codec_id = serializers.CharField()
            prior = serializers.CharField(allow_null=True)
            codec_config = serializers.DictField()
            original_bytes = serializers.IntegerField()
            compressed_bytes = serializers.IntegerField()
            rate = serializers.FloatField()
            bits_per_float = serializers.FloatField()
            mb_per_s = serializers.FloatField(allow_null=True)
            verification = serializers.CharField()

        params = serializers.ListField(child=serializers.DictField())
        files = serializers.ListField(child=serializers.DictField())
        rates = RateSerializer(many=True)

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request, id: int):
        entry = gradient_set_get(id=id, user=request.user)
        entry.rates = gradient_set_rate_table(gradient_set=entry)
        return Response(self.OutputSerializer(entry).data)
