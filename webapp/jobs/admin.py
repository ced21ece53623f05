from django.contrib import admin

from webapp.jobs.models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "kind", "status", "queue", "progress", "created_at", "finished_at"]
    list_filter = ["status", "kind", "queue", "team"]
    readonly_fields = ["created_at", "started_at", "finished_at", "celery_task_id"]
