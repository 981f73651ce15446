"""Deployments: an approved model version behind the invocations endpoint, with its history and what it served.

A deployment names its champion (answers requests), its fallback (what rollback goes back to) and an
optional challenger (canary: answers a share of requests; shadow: scores every request, logged only).
Every change bumps `generation`, which each serving process compares against its cached routing.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.models import KeyStatus, Project, hash_token_key


class DeploymentQuerySet(models.QuerySet):
    def visible_to(self, user) -> DeploymentQuerySet:
        return self.filter(project__in=Project.objects.visible_to(user))


class Deployment(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        STOPPED = "stopped", "Stopped"

    class ChallengerMode(models.TextChoices):
        CANARY = "canary", "Canary (answers a share of requests)"
        SHADOW = "shadow", "Shadow (scores every request, not returned)"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)  # site-wide: the invocations URL names it alone
    description = models.TextField(blank=True)
    environment = models.ForeignKey("approvals.Environment", on_delete=models.PROTECT, related_name="deployments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    champion = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    fallback = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    challenger = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    challenger_mode = models.CharField(max_length=16, choices=ChallengerMode.choices, blank=True)
    challenger_share = models.PositiveSmallIntegerField(default=0)  # percent of requests (canary)
    # Limits of the invocations endpoint (0: the site default from settings).
    max_rows = models.PositiveIntegerField(default=0)
    rate_limit_per_minute = models.PositiveIntegerField(default=0)
    generation = models.PositiveBigIntegerField(default=1)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_deployment_name"),
            models.CheckConstraint(condition=models.Q(challenger_share__lte=100), name="challenger_share_percent"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_max_rows(self) -> int:
        return self.max_rows or settings.PORTAL_SERVING_MAX_ROWS

    @property
    def effective_rate_limit(self) -> int:
        return self.rate_limit_per_minute or settings.PORTAL_SERVING_RATE_LIMIT_PER_MINUTE


class DeploymentEvent(models.Model):
    """One change of a deployment: the history of which version was live when, and who changed it."""

    class Kind(models.TextChoices):
        DEPLOYED = "deployed", "Deployed"
        PROMOTED = "promoted", "New champion"
        ROLLED_BACK = "rolled_back", "Rolled back"
        CHALLENGER = "challenger", "Challenger set"
        CHALLENGER_REMOVED = "challenger_removed", "Challenger removed"
        SETTINGS = "settings", "Settings changed"
        STOPPED = "stopped", "Stopped"
        RESUMED = "resumed", "Resumed"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    champion = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="deployment_events")
    previous_champion = models.ForeignKey("registry.ModelVersion", null=True, blank=True,
                                          on_delete=models.PROTECT, related_name="+")
    challenger = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=150, blank=True)  # e.g. "auto-deploy after approval"
    reason = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.deployment} {self.kind} at {self.created_at:%Y-%m-%d %H:%M}"


class DeploymentToken(KeyStatus, models.Model):
    """A key that may call one deployment's invocations endpoint and nothing else (for an app that only predicts).
    Only the key's hash is stored; it acts as its creator, who must still be allowed to predict."""

    KEY_PREFIX = "pd_"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True)
    key_hint = models.CharField(max_length=16)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_hint}…)"

    @staticmethod
    def hash(key: str) -> str:
        return hash_token_key(key)



class PredictionLogQuerySet(models.QuerySet):
    def visible_to(self, user) -> PredictionLogQuerySet:
        return self.filter(deployment__project__in=Project.objects.visible_to(user))


class PredictionLog(models.Model):
    """What one request was served (or one chunk of a batch job): kept for audit and read by monitoring.

    Written in bulk from the serving buffer; `record_id` makes a re-drained record a no-op."""

    class Role(models.TextChoices):
        CHAMPION = "champion", "Champion"
        CANARY = "canary", "Canary"
        SHADOW = "shadow", "Shadow"

    class Source(models.TextChoices):
        ONLINE = "online", "Online"
        BATCH = "batch", "Batch"

    id = models.BigAutoField(primary_key=True)
    record_id = models.UUIDField(unique=True)
    request_id = models.CharField(max_length=64, db_index=True)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey("registry.ModelVersion", null=True, on_delete=models.SET_NULL, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CHAMPION)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.ONLINE)
    created_at = models.DateTimeField(db_index=True)
    latency_ms = models.FloatField(null=True)
    status_code = models.PositiveSmallIntegerField()
    caller = models.CharField(max_length=150, blank=True)  # "username" or "username (token name)"
    caller_id = models.IntegerField(null=True, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    inputs = models.JSONField(null=True, blank=True)  # {"columns": [...], "data": [[...]]}
    outputs = models.JSONField(null=True, blank=True)  # the predictions, in row order
    error = models.TextField(blank=True)

    objects = PredictionLogQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["deployment", "-created_at"], name="predlog_deployment_time")]

    def __str__(self) -> str:
        return f"{self.request_id} ({self.deployment_id})"


class BatchRun(models.Model):
    """A batch scoring job: a file or dataset version scored in chunks by several workers."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="batch_runs")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    job = models.OneToOneField("core.Job", on_delete=models.CASCADE, related_name="batch_run")
    source_name = models.CharField(max_length=255)
    dataset_version = models.ForeignKey("datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    input_file = models.CharField(max_length=300, blank=True)  # storage name of an uploaded file
    result_file = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"batch {self.request_id} on {self.deployment}"
