from django.contrib import admin

from apps.datasets.models import Dataset, DatasetVersion


class VersionInline(admin.TabularInline):
    model = DatasetVersion
    extra = 0
    fields = ["number", "status", "original_filename", "size_bytes", "sha256", "created_by", "created_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "created_by", "created_at"]
    list_filter = ["project"]
    inlines = [VersionInline]
