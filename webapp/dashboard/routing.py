from django.urls import path

from webapp.dashboard.consumers import JobConsumer, TeamJobsConsumer

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    path("ws/teams/<slug:slug>/jobs/", TeamJobsConsumer.as_asgi()),
]
