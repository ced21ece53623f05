"""WSGI entry point (HTTP only; the ASGI app in ``webapp.asgi`` also serves the websockets)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")

application = get_wsgi_application()
