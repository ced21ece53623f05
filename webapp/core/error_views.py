"""The 404 and 500 handlers: pages from ``templates/404.html`` and ``500.html`` (never Django's debug pages), and
the API's ``{"message", "extra"}`` body under ``/api/``."""

from django.http import JsonResponse
from django.views import defaults


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request, exception):
    if _is_api(request):
        return JsonResponse({"message": "Not found.", "extra": {}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"message": "Internal server error; it has been logged.", "extra": {}}, status=500)
    return defaults.server_error(request)
