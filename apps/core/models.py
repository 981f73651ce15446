"""Long-running work: a Job row per Celery task so the UI and API can show its progress; `bulky_fields`."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


def bulky_fields(model: type[models.Model], *paths: str) -> list[str]:
    """`path__field` for each path and each JSON and long-text field of `model`: what a query that joins rows only
    to name them (a model version's model and number) should `.defer()`, so each row does not fetch and decode
    signatures, examples and evidence it never shows. New fields are covered as added."""
    return [f"{path}__{field.name}" for path in paths for field in model._meta.concrete_fields
            if isinstance(field, models.JSONField | models.TextField)]


class JobQuerySet(models.QuerySet):
    def visible_to(self, user) -> JobQuerySet:
        """Jobs a user may see: their own, those of projects they belong to, and (staff) all."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(Q(created_by=user) | Q(project__memberships__user=user)).distinct()


class Job(models.Model):
    """One piece of background work (profiling, import, scoring, …) and how far it has got."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0)
    message = models.CharField(max_length=500, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    # By string reference: core sits left of accounts in the dependency order.
    project = models.ForeignKey(
        "accounts.Project", null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    # Delivery bookkeeping, so a job survives a broker outage or a killed worker (services.requeue_stalled_jobs):
    # the Celery task that runs it, when it was last handed to the broker (null: never, e.g. the broker was
    # down), how many times a worker has started it, and which worker node did so last.
    task = models.CharField(max_length=200, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    def get_kind_display(self) -> str:
        return JOB_KIND_LABELS.get(self.kind, self.kind.replace("_", " ").capitalize())


# Human labels for job kinds; each app adds its own kinds here as it grows.
JOB_KIND_LABELS = {
    "system_check": "System check",
}
