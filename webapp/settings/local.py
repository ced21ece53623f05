"""One machine (what ``scripts/run`` serves): a fixed insecure key and local hosts, but no debug pages: DEBUG is
off unless ``DJANGO_DEBUG=1`` asks for it (a developer's own machine), so a 404 does not list the URL patterns
and a 500 does not show a traceback with the settings. Static files are served by WhiteNoise from
``collectstatic``'s output (``scripts/run`` collects them), compressed and with cache-busting names."""

from .base import *  # noqa: F403
from .base import env_bool, env_list

DEBUG = env_bool("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or "django-insecure-local-development-only"  # noqa: F405
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"])
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", ["http://localhost:8000", "http://127.0.0.1:8000"]
)
if DEBUG:
    # Serve static files straight from the finders while developing (no collectstatic needed).
    WHITENOISE_AUTOREFRESH = True
    WHITENOISE_USE_FINDERS = True
