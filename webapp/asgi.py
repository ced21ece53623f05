"""ASGI entry point (daphne): plain HTTP goes to Django, ``/ws/...`` to the Channels consumers.

``get_asgi_application()`` runs first so the app registry is ready before the consumers (and the models they
import) load. WebSockets are checked against ALLOWED_HOSTS (Origin header), authenticated from the session cookie
or a ``?token=<DRF token>`` query parameter, then routed.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings.local")
# Every concurrent request runs in its own thread: share a bounded pool of PostgreSQL connections (settings/base.py).
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "20")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from webapp.dashboard.middleware import TokenAuthMiddleware  # noqa: E402
from webapp.dashboard.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
