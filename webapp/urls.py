from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from webapp.jobs.apis import WorkerListApi
from webapp.registry.storage_apis import StorageBreakdownApi
from webapp.teams.urls import invitation_urlpatterns

api_v1 = [
    path("auth/", include(("webapp.core.urls", "auth"))),
    path("teams/", include(("webapp.teams.urls", "teams"))),
    path("invitations/", include((invitation_urlpatterns, "invitations"))),
    path("", include(("webapp.registry.urls", "registry"))),
    path("jobs/", include(("webapp.jobs.urls", "jobs"))),
    path("workers/", WorkerListApi.as_view(), name="workers"),
    path("storage/", StorageBreakdownApi.as_view(), name="storage"),
]

urlpatterns = [
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("admin/", admin.site.urls),
    path("", include("webapp.dashboard.urls")),
]

handler404 = "webapp.core.error_views.page_not_found"
handler500 = "webapp.core.error_views.server_error"
