"""A database that cannot give a connection now (pool exhausted, server out of connection slots, restarting)
answers 503 with a JSON body (``{"message", "extra"}`` like every API error) and a Retry-After header, instead of
a 500 with a traceback. Nothing was written: the request can be sent again."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseBusyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        response = JsonResponse({"message": "The database is busy; try again in a few seconds.",
                                 "extra": {"retry_after": RETRY_AFTER_SECONDS}}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
