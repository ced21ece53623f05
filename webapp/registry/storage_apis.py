from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from webapp.core.apis import Api
from webapp.registry.storage_selectors import team_storage_breakdown
from webapp.teams.selectors import team_resolve_for_user

# Module-level rows (not nested in the view) so their OpenAPI component names say "Storage" and collide with none.


class StorageSizesSerializer(serializers.Serializer):
    logical_bytes = serializers.IntegerField()
    on_disk_bytes = serializers.IntegerField()
    saved_bytes = serializers.IntegerField()
    ratio = serializers.FloatField(allow_null=True, help_text="logical / on disk; null when nothing is on disk")


class StorageHeldSerializer(StorageSizesSerializer):
    held = serializers.BooleanField(help_text="false: a folder on a server path, the user's (0 on disk, not in "
                                              "the totals)")


class StorageArtifactSerializer(StorageHeldSerializer):
    id = serializers.IntegerField()
    codec = serializers.CharField()
    label = serializers.CharField()
    pair_id = serializers.IntegerField(allow_null=True)
    pair = serializers.CharField(allow_null=True)
    gradient_set_id = serializers.IntegerField(allow_null=True)


class StorageUploadSerializer(StorageHeldSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    source = serializers.CharField()


class StorageDefinitionSerializer(serializers.Serializer):
    term = serializers.CharField()
    meaning = serializers.CharField()


class StorageTotalsSerializer(StorageSizesSerializer):
    shared_bytes = serializers.IntegerField()
    store_objects = serializers.IntegerField()


class StorageCategorySerializer(StorageHeldSerializer):
    key = serializers.CharField()
    label = serializers.CharField()
    items = serializers.IntegerField()


class StorageModelSerializer(StorageHeldSerializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    storage = serializers.CharField(help_text="folder or compressed")
    source = serializers.CharField()
    own_bytes = serializers.IntegerField(help_text="objects only this model references")
    shared_bytes = serializers.IntegerField(help_text="its even share of objects other models reference too")
    tensors = serializers.IntegerField()
    shared_tensors = serializers.IntegerField()


class StorageGradientSetSerializer(StorageUploadSerializer):
    artifacts = StorageArtifactSerializer(many=True)


class StorageRestoredSerializer(StorageHeldSerializer):
    job_id = serializers.IntegerField(allow_null=True, help_text="the decompress job whose output it is")
    model_id = serializers.IntegerField(allow_null=True, help_text="the model stored compressed it restores for "
                                                                   "readers")
    label = serializers.CharField()
    pinned = serializers.BooleanField()
    expires_at = serializers.DateTimeField(allow_null=True)


class StorageCodecSerializer(StorageHeldSerializer):
    codec = serializers.CharField()
    label = serializers.CharField()
    items = serializers.IntegerField()


class StorageBreakdownApi(Api):
    """Every byte the team's registry holds: logical bytes, bytes on disk and saved, by model (stored compressed:
    its share of the tensor-store objects, shared ones split evenly), artifact, gradient set, dataset, restored
    copy, category and codec. ``definitions`` says what each figure means."""

    class FilterSerializer(serializers.Serializer):
        team = serializers.SlugField(required=False, help_text="Team slug; default: your current team.")

    class OutputSerializer(serializers.Serializer):
        team = serializers.CharField()
        definitions = StorageDefinitionSerializer(many=True)
        totals = StorageTotalsSerializer()
        categories = StorageCategorySerializer(many=True)
        models = StorageModelSerializer(many=True)
        artifacts = StorageArtifactSerializer(many=True, help_text="pair artifacts")
        gradient_sets = StorageGradientSetSerializer(many=True)
        datasets = StorageUploadSerializer(many=True)
        restored = StorageRestoredSerializer(many=True)
        codecs = StorageCodecSerializer(many=True)

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer})
    def get(self, request):
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        team = team_resolve_for_user(user=request.user, slug=filters.validated_data.get("team"))
        return Response(self.OutputSerializer(team_storage_breakdown(team=team)).data)
