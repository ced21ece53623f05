from django.urls import path

from webapp.registry.apis import (
    ArtifactDownloadApi,
    ArtifactImportApi,
    ArtifactItemApi,
    ArtifactListApi,
    DatasetCollectionApi,
    DatasetItemApi,
    DatasetUploadApi,
    GradientSetCollectionApi,
    GradientSetDetailApi,
    GradientSetUploadApi,
    ModelCollectionApi,
    ModelItemApi,
    ModelRescanApi,
    ModelUploadApi,
    PairCollectionApi,
    PairComparisonApi,
    PairItemApi,
)
from webapp.registry.codecs_api import CodecListApi

urlpatterns = [
    path("models/", ModelCollectionApi.as_view(), name="model-list"),
    path("models/upload/", ModelUploadApi.as_view(), name="model-upload"),
    path("models/<int:id>/", ModelItemApi.as_view(), name="model-detail"),
    path("models/<int:id>/rescan/", ModelRescanApi.as_view(), name="model-rescan"),
    path("pairs/", PairCollectionApi.as_view(), name="pair-list"),
    path("pairs/<int:id>/", PairItemApi.as_view(), name="pair-detail"),
    path("pairs/<int:id>/comparison/", PairComparisonApi.as_view(), name="pair-comparison"),
    path("datasets/", DatasetCollectionApi.as_view(), name="dataset-list"),
    path("datasets/upload/", DatasetUploadApi.as_view(), name="dataset-upload"),
    path("datasets/<int:id>/", DatasetItemApi.as_view(), name="dataset-detail"),
    path("gradient-sets/", GradientSetCollectionApi.as_view(), name="gradient-set-list"),
    path("gradient-sets/upload/", GradientSetUploadApi.as_view(), name="gradient-set-upload"),
    path("gradient-sets/<int:id>/", GradientSetDetailApi.as_view(), name="gradient-set-detail"),
    path("artifacts/", ArtifactListApi.as_view(), name="artifact-list"),
    path("artifacts/import/", ArtifactImportApi.as_view(), name="artifact-import"),
    path("artifacts/<int:id>/", ArtifactItemApi.as_view(), name="artifact-detail"),
    path("artifacts/<int:id>/download/", ArtifactDownloadApi.as_view(), name="artifact-download"),
    path("codecs/", CodecListApi.as_view(), name="codec-list"),
]
