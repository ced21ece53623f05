"""Shared bits for the APIs: a base APIView that names its nested serializers in the OpenAPI schema after the
view (``JobCreateApi.InputSerializer`` -> ``JobCreateInput``), so dozens of ``InputSerializer`` classes do not
collide, and a helper for paginated list schemas."""

from drf_spectacular.utils import extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView


class Api(APIView):
    permission_classes = [IsAuthenticated]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        base = cls.__name__.removesuffix("Api")
        for attr, value in list(vars(cls).items()):
            if isinstance(value, type) and issubclass(value, serializers.BaseSerializer) and attr.endswith(
                "Serializer"
            ):
                extend_schema_serializer(component_name=f"{base}{attr.removesuffix('Serializer')}")(value)


def paginated(serializer_class, name: str):
    """OpenAPI response schema of a limit/offset page of ``serializer_class``."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "limit": serializers.IntegerField(),
            "offset": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer_class(many=True),
        },
    )

