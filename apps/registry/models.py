"""The model registry: registered models, their immutable numbered versions, validations and import drafts.

A version's canonical artifact is an MLflow model (pyfunc) in the portal's MLflow store; the row points
at it and adds governance: lineage, the safety verdict on the uploaded file, trust, and the model card's
computed evidence (feature importance, validations, the ONNX hint, the simple baselines).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.accounts.models import Project


class RegisteredModelQuerySet(models.QuerySet):
    def visible_to(self, user) -> RegisteredModelQuerySet:
        return self.filter(project__in=Project.objects.visible_to(user))


class RegisteredModel(models.Model):
    """A model as the organisation knows it ("loan default risk"), with its purpose; its files are versions."""

    class TaskType(models.TextChoices):
        CLASSIFICATION = "classification", "Classification"
        REGRESSION = "regression", "Regression"
        OTHER = "other", "Other"

    class RiskTier(models.TextChoices):
        LOW = "low", "Low"
        MEDIUM = "medium", "Medium"
        HIGH = "high", "High"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="registered_models")
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=120, unique=True)  # site-wide, so that API URLs can name it alone
    description = models.TextField(blank=True)
    intended_use = models.TextField(blank=True)
    out_of_scope_uses = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    task_type = models.CharField(max_length=16, choices=TaskType.choices, default=TaskType.CLASSIFICATION)
    risk_tier = models.CharField(max_length=8, choices=RiskTier.choices, default=RiskTier.MEDIUM)
    tags = models.JSONField(default=dict, blank=True)
    # A registered model on the MLflow tracking server whose new versions the periodic sync imports.
    follow_mlflow_name = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RegisteredModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_model_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def mlflow_name(self) -> str:
        """Its name in the portal's MLflow registry, which data scientists' own registered models may share."""
        return f"portal.{self.slug}"

    @property
    def latest_version(self) -> ModelVersion | None:
        return self.versions.order_by("-number").first()


class ModelVersionQuerySet(models.QuerySet):
    def visible_to(self, user) -> ModelVersionQuerySet:
        return self.filter(model__project__in=Project.objects.visible_to(user))


class ModelVersion(models.Model):
    """One immutable import of a model (v1, v2, …): its MLflow artifact, lineage, safety verdict and evidence."""

    class Status(models.TextChoices):
        IMPORTING = "importing", "Importing"
        QUARANTINED = "quarantined", "Quarantined"
        READY = "ready", "Ready"
        ARCHIVED = "archived", "Archived"
        FAILED = "failed", "Import failed"

    class Format(models.TextChoices):
        MLFLOW = "mlflow", "MLflow model (zip)"
        SKOPS = "skops", "scikit-learn (skops)"
        ONNX = "onnx", "ONNX"
        PICKLE = "pickle", "Pickle"
        JOBLIB = "joblib", "joblib"
        XGBOOST = "xgboost", "XGBoost (JSON/UBJ)"
        LIGHTGBM = "lightgbm", "LightGBM (text)"
        MLFLOW_SERVER = "mlflow_server", "MLflow tracking server"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IMPORTING)
    status_before_archive = models.CharField(max_length=16, choices=Status.choices, blank=True)
    error = models.TextField(blank=True)
    import_job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    # Where it came from: an uploaded file (kept in storage, never served from there), or an MLflow URI.
    format = models.CharField(max_length=16, choices=Format.choices)
    source_uri = models.CharField(max_length=500, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    file_name = models.CharField(max_length=300, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)

    # The canonical artifact in the portal's MLflow store, and a digest of its files (what approvals bind to).
    mlflow_model_uri = models.CharField(max_length=500, blank=True)
    mlflow_run_id = models.CharField(max_length=64, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True)
    flavor = models.CharField(max_length=64, blank=True)  # e.g. "sklearn (skops)", "onnx"
    signature = models.JSONField(null=True, blank=True)  # {"inputs": [{"name", "type"}], "outputs": [...]}
    input_example = models.JSONField(null=True, blank=True)  # {"columns": [...], "data": [[...]]}

    # Lineage.
    training_dataset = models.ForeignKey(
        "datasets.DatasetVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="model_versions"
    )
    code_repository = models.URLField(max_length=500, blank=True)
    code_commit = models.CharField(max_length=64, blank=True)
    params = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    requirements = models.JSONField(default=list, blank=True)  # ["scikit-learn==1.9.1", ...]
    mlflow_tags = models.JSONField(default=dict, blank=True)
    converted_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="conversions"
    )

    # Labels people put on it.
    aliases = models.JSONField(default=list, blank=True)
    tags = models.JSONField(default=dict, blank=True)

    # Safety: what the scan and the sandboxed conversion found, and who trusted the exact file.
    safety = models.JSONField(default=dict, blank=True)
    trusted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trusted_at = models.DateTimeField(null=True, blank=True)
    trusted_sha256 = models.CharField(max_length=64, blank=True)

    # Evidence computed by jobs.
    explainability = models.JSONField(null=True, blank=True)
    optimisation = models.JSONField(null=True, blank=True)
    # "Is a simpler model enough?": the version against a majority/mean predictor and a logistic/linear
    # regression on one seeded split of its training data (evidence.baselines).
    baselines = models.JSONField(null=True, blank=True)

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["model", "-number"]
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="unique_model_version_number")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    @property
    def project(self) -> Project:
        return self.model.project

    @property
    def is_servable(self) -> bool:
        """Stored in the MLflow store and either ready, or quarantined but trusted as this exact file by an admin
        (trust is recorded before the job stores the file: until then there is nothing to run)."""
        if not self.mlflow_model_uri:
            return False
        if self.status == self.Status.READY:
            return True
        return (
            self.status == self.Status.QUARANTINED and bool(self.trusted_sha256) and self.trusted_sha256 == self.sha256
        )

    @property
    def input_names(self) -> list[str]:
        return [c.get("name") for c in (self.signature or {}).get("inputs", []) if c.get("name")]


class ModelValidation(models.Model):
    """A dataset version checked against a model version's signature and training profile (a stored report)."""

    class Verdict(models.TextChoices):
        PENDING = "pending", "Running"
        PASS = "pass", "Pass"
        WARN = "warn", "Warnings"
        FAIL = "fail", "Fail"
        ERROR = "error", "Could not run"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="validations")
    dataset_version = models.ForeignKey("datasets.DatasetVersion", on_delete=models.PROTECT, related_name="+")
    job = models.ForeignKey("core.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    verdict = models.CharField(max_length=8, choices=Verdict.choices, default=Verdict.PENDING)
    report = models.JSONField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.model_version} against {self.dataset_version}"

    @property
    def project(self) -> Project:
        return self.model_version.model.project


class ImportDraft(models.Model):
    """The import wizard's state between steps, so a person can leave and come back to it."""

    class Step(models.TextChoices):
        SOURCE = "source", "Source"
        FILE = "file", "File"
        DESCRIBE = "describe", "Describe"
        LINEAGE = "lineage", "Lineage"
        REVIEW = "review", "Review"
        DONE = "done", "Imported"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.SOURCE)
    data = models.JSONField(default=dict, blank=True)  # what each step collected
    file_name = models.CharField(max_length=300, blank=True)
    original_filename = models.CharField(max_length=255, blank=True)
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"Import draft {self.uuid} ({self.get_step_display()})"
