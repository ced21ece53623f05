from django.contrib import admin

from webapp.registry.models import Artifact, Dataset, ModelEntry, Pair


@admin.register(ModelEntry)
class ModelEntryAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "architecture", "layout", "total_bytes", "created_at"]
    list_filter = ["team", "source"]


@admin.register(Pair)
class PairAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "base", "finetuned", "created_at"]
    list_filter = ["team"]


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "size_bytes", "created_at"]
    list_filter = ["team"]


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "pair", "codec_id", "ratio", "verification", "created_at"]
    list_filter = ["team", "codec_id", "verification"]
