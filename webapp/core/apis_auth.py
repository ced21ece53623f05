from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from webapp.core.apis import Api
from webapp.core.exceptions import ApplicationError


class AuthTokenCreateApi(Api):
    """Exchange a username and password for the user's API token (created on first use)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer}, auth=[])
    def post(self, request):
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        # The Django request, so login throttling (django-axes) counts the attempt and its middleware answers 429
        # once the client is locked out.
        user = authenticate(request=request._request, **serializer.validated_data)
        if user is None or not user.is_active:
            raise ApplicationError("Unable to log in with the provided credentials.")
        # A token exchange is a login: the signal resets the throttling count and records last_login.
        user_logged_in.send(sender=user.__class__, request=request._request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response(self.OutputSerializer({"token": token.key}).data, status=status.HTTP_200_OK)
