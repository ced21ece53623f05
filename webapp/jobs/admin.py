from django.contrib import admin

from webapp.jobs.models import Job, Worker


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "kind", "status", "queue", "progress", "created_at", "finished_at"]
    list_filter = ["status", "kind", "queue", "team"]
    readonly_fields = ["created_at", "started_at", "finished_at", "celery_task_id"]


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["name", "hostname", "queues", "last_heartbeat", "started_at"]
    readonly_fields = ["name", "hostname", "pid", "queues", "device", "held_jobs", "started_at", "last_heartbeat"]
