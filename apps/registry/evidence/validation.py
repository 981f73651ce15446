"""Checking a dataset version against a model version: the datasets validation service, run as a job."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core.models import Job
from apps.datasets.models import DatasetVersion, redact_profile
from apps.datasets.validation import validate
from apps.registry.evidence.predictor import input_columns
from apps.registry.models import ModelValidation, ModelVersion

logger = logging.getLogger(__name__)

# MLflow column types in the vocabulary of dataset profiles.
_PROFILE_TYPES = {"long": "integer", "integer": "integer", "double": "float", "float": "float",
                  "boolean": "boolean", "string": "categorical", "datetime": "datetime", "binary": "text"}


def _dataset_version(ref) -> DatasetVersion | None:
    if isinstance(ref, DatasetVersion):
        return ref
    try:
        return DatasetVersion.objects.select_related("dataset__project").filter(uuid=str(ref)).first()
    except ValidationError:  # not a UUID
        return None


def start_validation(version: ModelVersion, dataset_version, *, actor) -> ModelValidation:
    """Queue a validation of `dataset_version` (a DatasetVersion or its uuid) against the version; audited."""
    require(actor, Action.EDIT_MODEL, version)
    dataset_version = _dataset_version(dataset_version)
    if dataset_version is None or dataset_version.project.pk != version.project.pk or \
            not can(actor, Action.VIEW_PROJECT, dataset_version):
        raise ValidationError({"dataset_version": [
            f"No dataset version with this id in {version.project.name}. Pick one from the list."]})
    if dataset_version.status != DatasetVersion.Status.READY or not dataset_version.profile:
        raise ValidationError({"dataset_version": [
            f"{dataset_version} is not profiled yet ({dataset_version.get_status_display().lower()}); "
            "validate it once profiling has finished."]})
    if not input_columns(version):
        raise ValidationError({"model_version": [
            f"{version} has no named input signature to validate data against."]})
    from apps.registry.tasks import validate_version_task

    with transaction.atomic():
        validation = ModelValidation.objects.create(model_version=version, dataset_version=dataset_version,
                                                    created_by=actor)
        validation.job = jobs.create_job("validate_model", actor=actor, project=version.project,
                                         params={"validation": str(validation.uuid), "version": str(version.uuid)},
                                         enqueue=validate_version_task)
        validation.save(update_fields=["job"])
        audit.record("model.validation_started", actor=actor, obj=version,
                     details={"version": version.number, "dataset_version": str(dataset_version.uuid),
                              "dataset": str(dataset_version)})
    return validation


def expected_schema(version: ModelVersion, training_profile: dict | None, columns: set[str]) -> list[dict]:
    """The signature's inputs (typed like the training profile where it knows them), plus the target if present."""
    known = {c["name"]: c["type"] for c in (training_profile or {}).get("columns", [])}
    schema = [{"name": c["name"], "type": known.get(c["name"]) or _PROFILE_TYPES.get(c.get("type"), "text")}
              for c in input_columns(version)]
    target = (version.tags or {}).get("target_column")
    if target and target in columns and target in known:  # labelled data is welcome, not an "extra column"
        schema.append({"name": target, "type": known[target]})
    return schema


def _hidden(dataset_version: DatasetVersion | None) -> set[str]:
    # Reports are read by every project member, so unrevealed PII columns keep only their name and type.
    if dataset_version is None:
        return set()
    return set(dataset_version.pii_columns) - set(dataset_version.revealed_columns)


def validate_version(job_id: str) -> None:
    """The job: compare the dataset's stored profile with the signature and the training profile; store the report."""
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    validation = ModelValidation.objects.select_related(
        "model_version__model__project", "model_version__training_dataset", "dataset_version"
    ).get(uuid=job.params["validation"])
    if validation.verdict != ModelValidation.Verdict.PENDING:  # an earlier delivery finished it
        jobs.succeed_job(job_id, result={"validation": str(validation.uuid), "verdict": validation.verdict},
                         message="Already validated")
        return
    version, data = validation.model_version, validation.dataset_version
    jobs.report_progress(job_id, 20, "Comparing the data with the model's signature and training data…")
    training = version.training_dataset
    reference = redact_profile(training.profile, _hidden(training)) if training else None
    profile = redact_profile(data.profile, _hidden(data))
    columns = {c["name"] for c in (profile or {}).get("columns", [])}
    try:
        report = validate(profile, expected_schema=expected_schema(version, reference, columns), reference=reference)
    except Exception as exc:
        logger.exception("validation %s failed", validation.uuid)
        with transaction.atomic():
            ModelValidation.objects.filter(pk=validation.pk).update(
                verdict=ModelValidation.Verdict.ERROR, report={"error": f"{type(exc).__name__}: {exc}"})
            audit.record("model.validation_failed", actor=None, actor_label="validation job", obj=version,
                         details={"validation": str(validation.uuid)})
        jobs.fail_job(job_id, error="The validation could not run because of an internal error; it has been logged.",
                      message="Validation failed")
        return
    body = report.as_dict()
    body.update(reference=str(training) if training else None, dataset_version=str(data),
                compared_columns=sorted(columns))
    with transaction.atomic():
        ModelValidation.objects.filter(pk=validation.pk).update(verdict=report.verdict, report=body)
        audit.record("model.validated", actor=None, actor_label="validation job", obj=version,
                     details={"validation": str(validation.uuid), "dataset_version": str(data.uuid),
                              "verdict": report.verdict, "findings": len(report.findings)})
    jobs.succeed_job(job_id, result={"validation": str(validation.uuid), "verdict": report.verdict},
                     message=report.summary[:500])
