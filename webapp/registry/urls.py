from django.urls import path

from webapp.registry.apis import (
    ArtifactDetailApi,
    ArtifactDownloadApi,
    ArtifactListApi,
    DatasetCollectionApi,
    DatasetDetailApi,
    DatasetUploadApi,
    ModelCollectionApi,
    ModelDetailApi,
    ModelUploadApi,
    PairCollectionApi,
    PairDetailApi,
)
from webapp.registry.codecs_api import CodecListApi

urlpatterns = [
    path("models/", ModelCollectionApi.as_view(), name="model-list"),
    path("models/upload/", ModelUploadApi.as_view(), name="model-upload"),
    path("models/<int:id>/", ModelDetailApi.as_view(), name="model-detail"),
    path("pairs/", PairCollectionApi.as_view(), name="pair-list"),
    path("pairs/<int:id>/", PairDetailApi.as_view(), name="pair-detail"),
    path("datasets/", DatasetCollectionApi.as_view(), name="dataset-list"),
    path("datasets/upload/", DatasetUploadApi.as_view(), name="dataset-upload"),
    path("datasets/<int:id>/", DatasetDetailApi.as_view(), name="dataset-detail"),
    path("artifacts/", ArtifactListApi.as_view(), name="artifact-list"),
    path("artifacts/<int:id>/", ArtifactDetailApi.as_view(), name="artifact-detail"),
    path("artifacts/<int:id>/download/", ArtifactDownloadApi.as_view(), name="artifact-download"),
    path("codecs/", CodecListApi.as_view(), name="codec-list"),
]
