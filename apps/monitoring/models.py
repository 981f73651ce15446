"""Monitoring: what the deployed models are doing, read from pre-computed rollups of the prediction log.

- `MonitoringSettings`: per deployment, the reference data, the business value of a prediction, retraining choices.
- `ReferenceProfile`: the bins and counts of every feature (and of the model's predictions) on the reference data,
  computed once; every rollup counts into these bins, so drift is a comparison of two short count vectors.
- `Rollup`: per deployment, model version and time bucket (5 min, 1 h, 1 day): usage, errors, a latency
  histogram, per-feature missing / out-of-range counts and binned distributions. Hours are sums of their
  5-minute rollups, days of their hours; every count is additive, so any window is a sum of a few rows.
- `GroundTruth`: a label for one logged prediction row, with the prediction copied beside it.
- `AlertRule` / `Alert` / `WebhookDelivery`: what to watch, what happened, who was told.
- `RetrainingRun`: a refit of a scikit-learn champion, its comparison, and the version and approval it produced.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.accounts.models import Project


class MonitoringSettings(models.Model):
    """Monitoring choices for one deployment (created on first use with the defaults)."""

    deployment = models.OneToOneField("deployments.Deployment", on_delete=models.CASCADE, related_name="monitoring")
    # Drift compares against this dataset version; empty: the champion's training dataset.
    reference_dataset = models.ForeignKey("datasets.DatasetVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="+")
    value_per_prediction = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    value_unit = models.CharField(max_length=16, blank=True, default="USD")
    # Retraining: which labelled data a refit uses, and an optional schedule.
    retrain_with_feedback = models.BooleanField(default=True)
    retrain_feedback_days = models.PositiveIntegerField(default=30)
    retrain_every_days = models.PositiveIntegerField(default=0)  # 0: only on demand or by an alert rule
    last_scheduled_retrain = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"monitoring of {self.deployment}"


class ReferenceProfile(models.Model):
    """Bins and reference counts for one model version's inputs and predictions on one dataset version.

    features: {name: {"kind": "numeric"|"categorical", "edges": [...] (numeric, inner bin edges),
                      "categories": [...] (categorical; values outside them count in a last "other" bin),
                      "min", "max", "counts": [...], "n", "missing"}}
    predictions: the same shape for the model's output on a sample of the reference rows (or {}).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Computing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    dataset_version = models.ForeignKey("datasets.DatasetVersion", on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    rows = models.PositiveBigIntegerField(default=0)
    features = models.JSONField(default=dict, blank=True)
    predictions = models.JSONField(default=dict, blank=True)
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset_version", "model_version"],
                                               name="unique_reference_profile")]

    def __str__(self) -> str:
        return f"reference {self.dataset_version} for {self.model_version}"


class Rollup(models.Model):
    """Counts for one deployment, model version and time bucket; see the module docstring."""

    class Bucket(models.TextChoices):
        FIVE_MINUTES = "5m", "5 minutes"
        HOUR = "1h", "Hour"
        DAY = "1d", "Day"

    id = models.BigAutoField(primary_key=True)
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="+")
    model_version = models.ForeignKey("registry.ModelVersion", on_delete=models.CASCADE, related_name="+")
    shadow = models.BooleanField(default=False)  # scored in shadow: not served, not counted as usage
    bucket = models.CharField(max_length=2, choices=Bucket.choices)
    start = models.DateTimeField()
    reference = models.ForeignKey(ReferenceProfile, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    requests = models.PositiveIntegerField(default=0)
    rows = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)  # requests answered with a status >= 400
    callers = models.JSONField(default=list, blank=True)  # distinct caller names (a short list)
    latency_sum = models.FloatField(default=0)
    latency_hist = models.JSONField(default=list, blank=True)  # counts in rollups.LATENCY_EDGES bins
    # {name: {"n": rows seen, "missing": n, "out_of_range": n, "counts": [...] in the reference's bins}}
    features = models.JSONField(default=dict, blank=True)
    predictions = models.JSONField(default=dict, blank=True)  # {"n", "missing", "counts", "sum"}
    # {"n", "kind": "classification"|"regression", ...additive sufficient statistics, see performance.py}
    performance = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "model_version", "shadow", "bucket", "start"],
                                               name="unique_rollup")]
        indexes = [models.Index(fields=["deployment", "bucket", "start"], name="rollup_deployment_time")]

    def __str__(self) -> str:
        return f"{self.deployment_id} {self.bucket} {self.start:%Y-%m-%d %H:%M}"


class RollupCursor(models.Model):
    """How far the rollup task has read the prediction log (the highest PredictionLog id rolled up)."""

    name = models.CharField(max_length=32, unique=True, default="predictions")
    last_id = models.BigIntegerField(default=0)
    last_feedback_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} up to {self.last_id}"


class GroundTruthQuerySet(models.QuerySet):
    def visible_to(self, user) -> GroundTruthQuerySet:
        return self.filter(deployment__project__in=Project.objects.visible_to(user))


class GroundTruth(models.Model):
    """The true outcome for one row of one logged request, with what the model predicted for it."""

    id = models.BigAutoField(primary_key=True)
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=64)
    row = models.PositiveIntegerField(default=0)
    label = models.JSONField()
    # Copied from the prediction log when the label arrives (null: no such logged prediction yet).
    prediction = models.JSONField(null=True, blank=True)
    model_version = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+")
    predicted_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, default="api")  # api | csv
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = GroundTruthQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["deployment", "request_id", "row"], name="unique_ground_truth")]
        indexes = [models.Index(fields=["deployment", "predicted_at"], name="groundtruth_deployment_time")]

    def __str__(self) -> str:
        return f"{self.request_id}[{self.row}] = {self.label}"


class AlertRuleQuerySet(models.QuerySet):
    def visible_to(self, user) -> AlertRuleQuerySet:
        return self.filter(deployment__project__in=Project.objects.visible_to(user))


class AlertRule(models.Model):
    """What to watch on one deployment: a metric over a trailing window compared with a threshold."""

    class Comparator(models.TextChoices):
        ABOVE = "gt", "above"
        AT_LEAST = "gte", "at or above"
        BELOW = "lt", "below"
        AT_MOST = "lte", "at or below"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    class Action(models.TextChoices):
        NONE = "", "Notify only"
        RETRAIN = "retrain", "Notify and start retraining"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=120)
    metric = models.CharField(max_length=64)  # a key of metrics.METRICS, e.g. "error_rate", "drift_psi_max"
    comparator = models.CharField(max_length=3, choices=Comparator.choices, default=Comparator.ABOVE)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(default=60)
    min_samples = models.PositiveIntegerField(default=30)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    notify_in_app = models.BooleanField(default=True)
    notify_email = models.BooleanField(default=False)
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(max_length=128, blank=True)  # HMAC-SHA256 key for X-Portal-Signature
    action = models.CharField(max_length=16, choices=Action.choices, blank=True, default=Action.NONE)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)  # created with the deployment
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)

    objects = AlertRuleQuerySet.as_manager()

    class Meta:
        ordering = ["deployment", "name"]
        constraints = [models.UniqueConstraint(fields=["deployment", "name"], name="unique_alert_rule_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def project(self) -> Project:
        return self.deployment.project


class AlertQuerySet(models.QuerySet):
    def visible_to(self, user) -> AlertQuerySet:
        return self.filter(rule__deployment__project__in=Project.objects.visible_to(user))

    def open(self) -> AlertQuerySet:
        return self.exclude(status=Alert.Status.RESOLVED)


class Alert(models.Model):
    """One episode of a rule's condition holding: opened once, updated while it lasts, resolved when it recovers."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        SNOOZED = "snoozed", "Snoozed"
        RESOLVED = "resolved", "Resolved"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    severity = models.CharField(max_length=16, choices=AlertRule.Severity.choices)
    value = models.FloatField(null=True, blank=True)
    worst_value = models.FloatField(null=True, blank=True)
    samples = models.PositiveBigIntegerField(default=0)
    title = models.CharField(max_length=200)
    what_happened = models.TextField(blank=True)
    why_it_matters = models.TextField(blank=True)
    what_to_do = models.TextField(blank=True)
    link = models.CharField(max_length=500, blank=True)
    details = models.JSONField(default=dict, blank=True)  # e.g. the drifted features
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="+")
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    retraining = models.ForeignKey("RetrainingRun", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            # At most one unresolved alert per rule: "opens once, updates while it lasts".
            models.UniqueConstraint(fields=["rule"], condition=~models.Q(status="resolved"),
                                    name="one_open_alert_per_rule"),
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def project(self) -> Project:
        return self.rule.deployment.project


class WebhookDelivery(models.Model):
    """One webhook message for an alert event, retried with backoff until delivered or out of attempts."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=16)  # opened | resolved
    url = models.URLField(max_length=500)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due")]

    def __str__(self) -> str:
        return f"{self.event} of {self.alert_id} to {self.url} ({self.status})"


class RetrainingRunQuerySet(models.QuerySet):
    def visible_to(self, user) -> RetrainingRunQuerySet:
        return self.filter(deployment__project__in=Project.objects.visible_to(user))


class RetrainingRun(models.Model):
    """A refit of the champion's estimator on fresh labelled data, compared with the champion on a holdout."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Challenger registered"
        FAILED = "failed", "Failed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    deployment = models.ForeignKey("deployments.Deployment", on_delete=models.CASCADE, related_name="retraining_runs")
    base_version = models.ForeignKey("registry.ModelVersion", on_delete=models.PROTECT, related_name="+")
    new_version = models.ForeignKey("registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    approval = models.ForeignKey("approvals.ApprovalRequest", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    job = models.OneToOneField("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    trigger = models.CharField(max_length=32, default="manual")  # manual | alert | schedule
    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # What it was fitted on and how it compared: {"training": {...}, "holdout_rows", "champion": {metrics},
    # "challenger": {metrics}, "primary_metric", "better": bool, "summary": "..."}
    comparison = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = RetrainingRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"retraining of {self.base_version} ({self.status})"

    @property
    def project(self) -> Project:
        return self.deployment.project
