"""One DRF exception handler: every error answers ``{"message": str, "extra": {...}}``.

ApplicationError -> 400; Django ValidationError -> 400 (field errors under ``extra.fields``); Http404 -> 404;
PermissionDenied -> 403; DRF's own errors keep their status with the same body shape.
"""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from webapp.core.exceptions import ApplicationError


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _first_message(value)
            if key in ("non_field_errors", "__all__", "detail"):
                return text
            return f"{key}: {text}"
        return "Invalid input."
    if isinstance(detail, list):
        return _first_message(detail[0]) if detail else "Invalid input."
    return str(detail)


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)

    if response is None:
        if isinstance(exc, ApplicationError):
            return Response({"message": exc.message, "extra": exc.extra}, status=400)
        return None

    if isinstance(exc.detail, (list, dict)):
        response.data = {"message": _first_message(exc.detail), "extra": {"fields": response.data}}
    else:
        response.data = {"message": str(exc.detail), "extra": {}}
    return response
