import modelcodecs
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from webapp.core.apis import Api


class CodecListApi(Api):
    """Every registered codec with its capabilities and the JSON Schema of its config (for forms)."""

    class OutputSerializer(serializers.Serializer):
        id = serializers.CharField(source="codec_id")
        description = serializers.CharField()
        lossless = serializers.BooleanField()
        needs_base = serializers.BooleanField()
        needs_prior = serializers.BooleanField()
        input_kind = serializers.CharField()
        config_schema = serializers.SerializerMethodField()

        def get_config_schema(self, codec_cls) -> dict:
            return codec_cls.config_schema()

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request):
        return Response(self.OutputSerializer(modelcodecs.list_codecs(), many=True).data)
