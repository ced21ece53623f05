from django.urls import path, re_path

from webapp.dashboard.consumers import JobConsumer, NotFoundConsumer, TeamJobsConsumer

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    path("ws/teams/<slug:slug>/jobs/", TeamJobsConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),  # last: whatever else reaches the websocket router
]
