"""Imports: store the file, number the version, queue the import job, and the job itself."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from apps.accounts.models import Project
from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.registry import importers, mlflow_store
from apps.registry.formats import ModelFileError, check_claim, sniff
from apps.registry.models import ModelVersion, RegisteredModel
from apps.registry.services.metadata import clean_lineage, create_model, update_model

logger = logging.getLogger(__name__)

# Data-only types in pipelines the portal fits itself (a baseline's SimpleImputer keeps the numpy dtype it was
# fitted on). Allowed only for the exact file the portal wrote (its SHA-256 in `safety["fitted_by_portal"]`,
# which only evidence.baselines sets); uploads still go through the skops allow-list alone.
PORTAL_FITTED_TYPES = frozenset({"numpy.dtype"})

# --- Import ----------------------------------------------------------------------------------------------------


def start_import(
    project: Project,
    *,
    actor,
    name: str,
    uploaded=None,
    stored: storage.StoredFile | None = None,
    original_filename: str = "",
    fmt: str | None = None,
    model_fields: dict | None = None,
    lineage: dict | None = None,
    description: str = "",
) -> ModelVersion:
    """Store the file, check what it is, create the next version (importing) and queue the import job.

    Give either `uploaded` (a Django UploadedFile) or `stored` (a file already in storage, from the wizard).
    """
    require(actor, Action.IMPORT_MODEL, project)
    lineage_clean = clean_lineage(project, actor, lineage or {})
    if fmt and (fmt not in ModelVersion.Format.values or fmt == ModelVersion.Format.MLFLOW_SERVER):
        raise ValidationError({"format": ["Choose one of: mlflow, skops, onnx, pickle, joblib, xgboost, lightgbm."]})
    if uploaded is not None:
        original_filename = (uploaded.name or "model")[:255]
        stored, actual = store_upload(uploaded, claimed=fmt)
    elif stored is not None:
        actual = checked_format(stored, original_filename, fmt)
    else:
        raise ValidationError({"file": ["Choose a model file to upload."]})
    existing = RegisteredModel.objects.filter(project=project, name=(name or "").strip()).first()
    if existing is None:
        model = create_model(project, actor=actor, name=name, **(model_fields or {}))
    else:
        model = update_model(existing, actor=actor, **model_fields) if model_fields else existing
    return create_version(
        model,
        actor=actor,
        description=description,
        format=actual,
        original_filename=original_filename,
        file_name=stored.name,
        size_bytes=stored.size,
        sha256=stored.sha256,
        training_dataset=lineage_clean.get("training_dataset"),
        code_repository=lineage_clean.get("code_repository", ""),
        code_commit=lineage_clean.get("code_commit", ""),
        params=lineage_clean.get("params", {}),
        metrics=lineage_clean.get("metrics", {}),
        requirements=lineage_clean.get("requirements", []),
        input_example=lineage_clean.get("input_example"),
        tags={"target_column": lineage_clean["target_column"]} if lineage_clean.get("target_column") else {},
    )


def store_upload(uploaded, *, claimed: str | None = None) -> tuple[storage.StoredFile, str]:
    """Store an uploaded model file (not yet a version) and tell its format by content; a refused file is not kept."""
    filename = (uploaded.name or "model")[:255]
    try:
        uploaded.seek(0)
        stored = storage.save_stream("models/incoming", uploaded.chunks(1 << 20), filename=filename,
                                     max_bytes=settings.PORTAL_MAX_UPLOAD_BYTES)
    except storage.FileTooLarge as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    return stored, checked_format(stored, filename, claimed)


def checked_format(stored: storage.StoredFile, filename: str, claimed: str | None) -> str:
    """The stored file's format by content, which must match the claimed one; else it is deleted and refused."""
    try:
        with storage.local_path(stored.name) as path:
            actual = sniff(path, filename)
        check_claim(actual, claimed, filename)
    except ModelFileError as exc:
        storage.delete(stored.name)
        raise ValidationError({"file": [str(exc)]}) from None
    return actual


def create_version(model: RegisteredModel, *, actor, description: str = "", **fields) -> ModelVersion:
    """The model's next version (importing), numbered under a lock, with its import job queued; audited."""
    with transaction.atomic():
        RegisteredModel.objects.select_for_update().filter(pk=model.pk).first()
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            model=model, number=number, description=description.strip(), created_by=actor, **fields
        )
        version.import_job = _queue_import(version, actor=actor)
        version.save(update_fields=["import_job"])
        audit.record(
            "model.import_started",
            actor=actor,
            obj=version,
            project=model.project,
            details={"model": model.name, "version": number, "format": version.format,
                     "file": version.original_filename, "source": version.source_uri,
                     "sha256": version.sha256, "bytes": version.size_bytes},
        )
    return version


def _queue_import(version: ModelVersion, *, actor, trusted: bool = False) -> Job:
    from apps.registry.tasks import import_version_task

    return jobs.create_job(
        "import_model",
        actor=actor,
        project=version.project,
        params={"version": str(version.uuid), "trusted": trusted},
        enqueue=import_version_task,
    )


def training_sample(version: ModelVersion, rows: int = 1000):
    """Input rows to infer a signature from: the linked training data (without the target) or the example."""
    import pandas as pd

    if version.training_dataset_id and version.training_dataset.parquet_name:
        import pyarrow.parquet as pq

        with storage.open_stream(version.training_dataset.parquet_name) as handle:
            parquet = pq.ParquetFile(handle)
            table = next(parquet.iter_batches(batch_size=rows)) if parquet.metadata.num_rows else None
        if table is not None:
            frame = table.to_pandas()
            target = (version.tags or {}).get("target_column")
            return frame.drop(columns=[target]) if target in frame.columns else frame
    example = version.input_example
    if example and example.get("columns"):
        return pd.DataFrame(example["data"], columns=example["columns"])
    return None


def import_version(job_id: str) -> None:
    """The import job: turn the stored file into an MLflow artifact in the portal's store, or quarantine it."""
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    version = ModelVersion.objects.select_related("model__project", "training_dataset__dataset").get(
        uuid=job.params["version"]
    )
    trusted = bool(job.params.get("trusted"))
    if version.mlflow_model_uri:  # finished by an earlier delivery
        jobs.succeed_job(job_id, result={"version": str(version.uuid)}, message="Already imported")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="portal-import-") as tmp:
            work = Path(tmp)
            jobs.report_progress(job_id, 5, "Reading the file…")
            source = storage.local_path(version.file_name) if version.file_name else contextlib.nullcontext(None)
            with source as path:  # None for a version from the MLflow server: it has no uploaded file
                prepared = _prepare(version, path, work=work, job_id=job_id, trusted=trusted)
                artifact = None
                if prepared.directory is not None and (not prepared.quarantined or trusted):
                    jobs.report_progress(job_id, 80, "Saving the model in the MLflow store…")
                    artifact = mlflow_store.store_directory(
                        prepared.directory,
                        registered_name=version.model.mlflow_name,
                        project_slug=version.project.slug,
                        tags={"portal.model": version.model.slug, "portal.version": str(version.number),
                              "portal.version_label": f"{version.model.slug} v{version.number}",
                              "portal.source_sha256": version.sha256},
                    )
    except ModelFileError as exc:
        _import_failed(version, job_id, str(exc))
        return
    except Exception:
        logger.exception("import of %s failed", version)
        _import_failed(version, job_id, "The import failed because of an internal error. It has been logged; "
                                        "try again or contact the operators.")
        raise
    _import_succeeded(version, job_id, prepared, artifact, trusted=trusted)


def _prepare(version: ModelVersion, path: Path, *, work: Path, job_id: str, trusted: bool) -> importers.Prepared:
    sample = training_sample(version)
    trusted_types = frozenset(version.safety.get("untrusted_types", [])) if trusted else frozenset()
    if version.sha256 and version.safety.get("fitted_by_portal") == version.sha256:
        trusted_types |= PORTAL_FITTED_TYPES
    jobs.report_progress(job_id, 20, "Checking the file is safe to open…")
    if version.format in ("pickle", "joblib"):
        from apps.registry import safety

        if trusted:
            return safety.trusted_pickle_directory(path, version.format, work=work, sample=sample)
        return safety.examine_pickle(
            path, version.format, work=work, sample=sample,
            progress=lambda pct, msg: jobs.report_progress(job_id, 20 + int(pct * 0.6), msg),
        )
    if version.format == "mlflow_server":
        from apps.registry import mlflow_source

        return mlflow_source.prepare(version, work=work, trusted=trusted)
    return importers.prepare(path, version.format, work=work, sample=sample, trusted_types=trusted_types)


def _import_succeeded(version: ModelVersion, job_id: str, prepared, artifact, *, trusted: bool) -> None:
    status = ModelVersion.Status.READY if artifact is not None and not (prepared.quarantined and not trusted) \
        else ModelVersion.Status.QUARANTINED
    if trusted and artifact is not None:
        status = ModelVersion.Status.QUARANTINED  # served as-is on an admin's trust, still marked as such
    fields = {
        "status": status,
        "flavor": prepared.flavor[:64],
        "safety": {**version.safety, **prepared.safety, "notes": prepared.notes} if trusted else
                  {**prepared.safety, "notes": prepared.notes},
        "signature": prepared.signature or version.signature,
        "input_example": prepared.input_example or version.input_example,
        "requirements": version.requirements or prepared.requirements,
        "error": "",
    }
    for key, value in prepared.lineage.items():  # what the source recorded (an MLflow run), unless given by hand
        if key in {"params", "metrics", "code_commit", "code_repository", "mlflow_tags", "source_uri"} and value \
                and not getattr(version, key):
            fields[key] = value
    if artifact is not None:
        fields.update(mlflow_model_uri=artifact.model_uri, mlflow_run_id=artifact.run_id,
                      artifact_sha256=artifact.artifact_sha256)
    if not version.sha256 and prepared.safety.get("source_sha256"):
        # A server import has no upload: what trust pins (and approvals bind to) is the digest of what it fetched.
        fields.update(sha256=prepared.safety["source_sha256"], size_bytes=prepared.safety.get("source_bytes"))
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(**fields)
        version.refresh_from_db()
        audit.record(
            "model.imported" if status == ModelVersion.Status.READY or trusted else "model.quarantined",
            actor=None,
            actor_label="import job",
            obj=version,
            project=version.project,
            details={"version": version.number, "status": status, "flavor": version.flavor,
                     "artifact_sha256": version.artifact_sha256, "safety": prepared.safety.get("verdict", "")},
        )
    message = {
        ModelVersion.Status.READY: f"Imported {version} ({version.flavor})",
        ModelVersion.Status.QUARANTINED: f"{version} is quarantined: {prepared.safety.get('summary', '')}"
        if not trusted else f"{version} is stored as trusted by an admin",
    }[status]
    jobs.succeed_job(job_id, result={"version": str(version.uuid), "status": status}, message=message[:500])


def _import_failed(version: ModelVersion, job_id: str, message: str) -> None:
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED, error=message)
        audit.record("model.import_failed", actor=None, actor_label="import job", obj=version,
                     project=version.project, details={"version": version.number, "error": message[:500]})
    jobs.fail_job(job_id, error=message, message="Import failed")
