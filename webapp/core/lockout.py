"""What a client gets once login throttling (django-axes) refuses it: 429, as the API's JSON body under
``/api/`` and as a page elsewhere. It does not say whether the username exists."""

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render


def lockout_response(request, original_response=None, credentials=None):
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    message = f"Too many failed logins: try again in {minutes} minutes."
    if request.path.startswith("/api/"):
        response = JsonResponse({"message": message, "extra": {"retry_after_s": minutes * 60}}, status=429)
    else:
        response = render(request, "registration/locked_out.html", {"message": message}, status=429)
    response["Retry-After"] = str(minutes * 60)
    return response
