"""Login throttling for every login that comes from a client."""

from axes.backends import AxesStandaloneBackend


class ThrottledLoginBackend(AxesStandaloneBackend):
    """django-axes' check, for logins that carry an HTTP request (the /login/ form, the API token endpoint).
    ``authenticate()`` called without one (management commands, internal code) is no client's attempt: it is left
    to the next backend instead of failing."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
