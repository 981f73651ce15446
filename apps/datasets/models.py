"""Datasets: named collections of immutable, profiled versions of a data file within a project."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.accounts.models import Project


class DatasetQuerySet(models.QuerySet):
    def visible_to(self, user) -> DatasetQuerySet:
        return self.filter(project__in=Project.objects.visible_to(user))


class Dataset(models.Model):
    """A named dataset in a project (e.g. "loan applications"); its content lives in versions."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="datasets")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="unique_dataset_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> DatasetVersion | None:
        return self.versions.order_by("-number").first()


class DatasetVersionQuerySet(models.QuerySet):
    def visible_to(self, user) -> DatasetVersionQuerySet:
        return self.filter(dataset__project__in=Project.objects.visible_to(user))


class DatasetVersion(models.Model):
    """One immutable upload (or derived file) of a dataset: v1, v2, … with its profile and lineage."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        TSV = "tsv", "TSV"
        PARQUET = "parquet", "Parquet"
        XLSX = "xlsx", "Excel (.xlsx)"

    class Status(models.TextChoices):
        PROFILING = "profiling", "Profiling"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # The stored file, exactly as uploaded (encrypted at rest when PORTAL_ENCRYPTION_KEY is set).
    file_name = models.CharField(max_length=300)
    original_filename = models.CharField(max_length=255)
    format = models.CharField(max_length=16, choices=Format.choices)
    size_bytes = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    encrypted = models.BooleanField(default=False)
    # A typed columnar copy written by profiling, which the data grid reads.
    parquet_name = models.CharField(max_length=300, blank=True)

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROFILING)
    error = models.TextField(blank=True)
    profile_job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    row_count = models.PositiveBigIntegerField(null=True, blank=True)
    column_count = models.PositiveIntegerField(null=True, blank=True)
    schema = models.JSONField(default=list, blank=True)      # [{"name", "type"}]
    profile = models.JSONField(null=True, blank=True)         # see profiling.profile_batches
    # Columns a project admin has revealed to viewers despite PII findings.
    revealed_columns = models.JSONField(default=list, blank=True)

    # Lineage of derived versions (anonymisation): where they came from and how.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    transformation = models.JSONField(null=True, blank=True)

    objects = DatasetVersionQuerySet.as_manager()

    class Meta:
        ordering = ["dataset", "-number"]
        constraints = [models.UniqueConstraint(fields=["dataset", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def project(self) -> Project:
        return self.dataset.project

    @property
    def pii_columns(self) -> list[str]:
        return [c["name"] for c in (self.profile or {}).get("columns", []) if c.get("pii")]

    def hidden_columns_for(self, user) -> set[str]:
        """PII columns this user may not see: hidden from viewers unless revealed by an admin."""
        from apps.accounts.permissions import Action, can

        if can(user, Action.VIEW_PII, self):
            return set()
        return set(self.pii_columns) - set(self.revealed_columns)


def redact_profile(profile: dict | None, hidden: set[str]) -> dict | None:
    """The profile with hidden (PII) columns reduced to counts: no values, ranges or charts that leak them."""
    if not profile or not hidden:
        return profile
    redacted = dict(profile)
    redacted["columns"] = [
        c
        if c["name"] not in hidden
        else {
            "name": c["name"],
            "type": c["type"],
            "missing": c.get("missing"),
            "missing_pct": c.get("missing_pct"),
            "pii": c.get("pii"),
            "hidden": True,
        }
        for c in profile.get("columns", [])
    ]
    corr = profile.get("correlations") or {}
    keep = [i for i, name in enumerate(corr.get("columns", [])) if name not in hidden]
    redacted["correlations"] = {
        "columns": [corr["columns"][i] for i in keep],
        "matrix": [[corr["matrix"][i][j] for j in keep] for i in keep],
    }
    redacted["warnings"] = [
        w for w in profile.get("warnings", []) if w.get("column") not in hidden or w.get("kind") == "pii"
    ]
    return redacted
