"""Every change to the registry: models, imports (a job), metadata, archive/restore, trust. Atomic and audited."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.models import Project, User
from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.datasets.models import DatasetVersion
from apps.registry import importers, mlflow_store
from apps.registry.formats import ModelFileError, check_claim, sniff
from apps.registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

MODEL_FIELDS = ("description", "intended_use", "out_of_scope_uses", "task_type", "risk_tier", "owner", "tags")
VERSION_FIELDS = ("description", "aliases", "tags", "code_repository", "code_commit", "params", "metrics")
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


# --- Registered models ---------------------------------------------------------------------------------------


def create_model(project: Project, *, actor, name: str, **fields) -> RegisteredModel:
    require(actor, Action.IMPORT_MODEL, project)
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the model a name, e.g. “Loan default risk”."]})
    if len(name) > 120:
        raise ValidationError({"name": ["Keep the name under 120 characters."]})
    cleaned = clean_model_fields(project, fields)
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                project=project, name=name, slug=_unique_slug(name), created_by=actor, **cleaned
            )
            audit.record("model.create", actor=actor, obj=model, project=project, details={"name": name})
    except IntegrityError:
        raise ValidationError(
            {"name": [f"{project.name} already has a model called “{name}”. Import a new version of it instead."]}
        ) from None
    return model


def get_or_create_model(project: Project, *, actor, name: str, **fields) -> RegisteredModel:
    existing = RegisteredModel.objects.filter(project=project, name=(name or "").strip()).first()
    return existing or create_model(project, actor=actor, name=name, **fields)


_RESERVED_SLUGS = {"import", "import-mlflow", "new"}  # taken by API and page routes under models/


def _unique_slug(name: str) -> str:
    base = slugify(name)[:100] or "model"
    slug, n = base, 1
    while slug in _RESERVED_SLUGS or RegisteredModel.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def clean_model_fields(project: Project, fields: dict) -> dict:
    """Validate the describe step's fields (shared by the wizard, the API and edits); unknown keys refused."""
    unknown = set(fields) - set(MODEL_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be set here."] for name in sorted(unknown)})
    cleaned = {}
    errors: dict[str, list[str]] = {}
    for key in ("description", "intended_use", "out_of_scope_uses"):
        if key in fields:
            cleaned[key] = str(fields[key] or "").strip()[:10_000]
    if "task_type" in fields:
        if fields["task_type"] not in RegisteredModel.TaskType.values:
            errors["task_type"] = [f"Choose one of: {', '.join(RegisteredModel.TaskType.values)}."]
        else:
            cleaned["task_type"] = fields["task_type"]
    if "risk_tier" in fields:
        if fields["risk_tier"] not in RegisteredModel.RiskTier.values:
            errors["risk_tier"] = [f"Choose one of: {', '.join(RegisteredModel.RiskTier.values)}."]
        else:
            cleaned["risk_tier"] = fields["risk_tier"]
    if "owner" in fields:
        owner = fields["owner"]
        if owner in (None, ""):
            cleaned["owner"] = None
        else:
            user = owner if isinstance(owner, User) else User.objects.filter(username=str(owner)).first()
            if user is None or not project.memberships.filter(user=user).exists():
                errors["owner"] = [f"“{owner}” is not a member of {project.name}. Name a member as the owner."]
            else:
                cleaned["owner"] = user
    if "tags" in fields:
        cleaned["tags"] = _string_dict(fields["tags"], "tags", errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def update_model(model: RegisteredModel, *, actor, **fields) -> RegisteredModel:
    require(actor, Action.EDIT_MODEL, model)
    cleaned = clean_model_fields(model.project, fields)
    changed = {k: v for k, v in cleaned.items() if getattr(model, k) != v}
    if not changed:
        return model
    with transaction.atomic():
        for key, value in changed.items():
            setattr(model, key, value)
        model.save(update_fields=[*changed, "updated_at"])
        audit.record("model.update", actor=actor, obj=model, details={"fields": sorted(changed)})
    return model


# --- Lineage ---------------------------------------------------------------------------------------------------


def clean_lineage(project: Project, actor, data: dict) -> dict:
    """Validate lineage fields: training dataset version (uuid, in this project), target column, code, params."""
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    ref = data.get("training_dataset")
    if ref:
        version = None
        if isinstance(ref, DatasetVersion):
            version = ref
        else:
            try:
                version = DatasetVersion.objects.select_related("dataset").filter(uuid=str(ref)).first()
            except ValidationError:
                version = None
        if version is None or version.project.pk != project.pk or not can(actor, Action.VIEW_PROJECT, version):
            errors["training_dataset"] = ["No dataset version with this id in the project. Pick one from the list."]
        elif version.status != DatasetVersion.Status.READY:
            errors["training_dataset"] = [f"{version} is not profiled yet ({version.get_status_display()})."]
        else:
            cleaned["training_dataset"] = version
            target = str(data.get("target_column") or "").strip()
            if target and target not in [c["name"] for c in version.schema]:
                errors["target_column"] = [f"{version} has no column “{target}”."]
            cleaned["target_column"] = target
    repository = str(data.get("code_repository") or "").strip()
    if repository and not re.match(r"^(https?|ssh|git)://|^git@", repository):
        errors["code_repository"] = ["Give the repository's URL, e.g. https://git.example.org/team/model."]
    cleaned["code_repository"] = repository[:500]
    commit = str(data.get("code_commit") or "").strip()
    if commit and not _COMMIT.match(commit):
        errors["code_commit"] = ["A commit hash is 7 to 64 hexadecimal characters (e.g. 3f9c2ab)."]
    cleaned["code_commit"] = commit.lower()
    cleaned["params"] = _string_dict(data.get("params") or {}, "params", errors)
    cleaned["metrics"] = _number_dict(data.get("metrics") or {}, "metrics", errors)
    requirements = data.get("requirements") or []
    if isinstance(requirements, str):
        requirements = [line.strip() for line in requirements.splitlines() if line.strip()]
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        errors["requirements"] = ["Give library versions as a list, e.g. [\"scikit-learn==1.5.2\"]."]
    cleaned["requirements"] = [r[:200] for r in requirements][:200] if isinstance(requirements, list) else []
    example = data.get("input_example")
    if example not in (None, "", [], {}):
        cleaned["input_example"] = _clean_example(example, errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _parse_json(value, name: str, errors: dict):
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            errors[name] = ["This is not valid JSON."]
            return None
    return value


def _string_dict(value, name: str, errors: dict) -> dict:
    value = _parse_json(value, name, errors)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 500:
        errors[name] = ["Give an object of names to values, e.g. {\"max_depth\": \"5\"} (at most 500)."]
        return {}
    return {str(k)[:250]: str(v)[:500] for k, v in value.items()}


def _number_dict(value, name: str, errors: dict) -> dict:
    value = _parse_json(value, name, errors)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 500:
        errors[name] = ["Give an object of metric names to numbers, e.g. {\"accuracy\": 0.91}."]
        return {}
    out = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            try:
                number = float(number)
            except (TypeError, ValueError):
                errors[name] = [f"The metric “{key}” is not a number."]
                return {}
        out[str(key)[:250]] = float(number)
    return out


def _clean_example(value, errors: dict) -> dict | None:
    """An input example: a list of records, or {"columns", "data"}; kept as {"columns", "data"}, ≤ 100 rows."""
    value = _parse_json(value, "input_example", errors)
    if value is None:
        return None
    if isinstance(value, dict) and "dataframe_records" in value:
        value = value["dataframe_records"]
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k in r))
        return {"columns": columns, "data": [[r.get(c) for c in columns] for r in value[:100]]}
    if isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):
        return {"columns": [str(c) for c in value["columns"]], "data": value["data"][:100]}
    errors["input_example"] = ["Give a few input rows as a JSON list of objects, e.g. [{\"age\": 42}]."]
    return None


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
        try:
            uploaded.seek(0)
            stored = storage.save_stream(
                "models/incoming", uploaded.chunks(1 << 20), filename=original_filename,
                max_bytes=settings.PORTAL_MAX_UPLOAD_BYTES,
            )
        except storage.FileTooLarge as exc:
            raise ValidationError({"file": [str(exc)]}) from None
    if stored is None:
        raise ValidationError({"file": ["Choose a model file to upload."]})
    try:
        with storage.local_path(stored.name) as path:
            actual = sniff(path, original_filename)
            check_claim(actual, fmt, original_filename)
    except ModelFileError as exc:
        storage.delete(stored.name)
        raise ValidationError({"file": [str(exc)]}) from None
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
        enqueue=lambda job_id: import_version_task.delay(job_id),
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


# --- Versions: metadata, archive, restore, trust ---------------------------------------------------------------


def update_version(version: ModelVersion, *, actor, **fields) -> ModelVersion:
    """Edit a version's labels and lineage text; its artifact, signature and status never change here."""
    require(actor, Action.EDIT_MODEL, version)
    unknown = set(fields) - set(VERSION_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field is read-only."] for name in sorted(unknown)})
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    if "description" in fields:
        cleaned["description"] = str(fields["description"] or "").strip()[:10_000]
    if "aliases" in fields:
        aliases = fields["aliases"]
        if not isinstance(aliases, list) or not all(isinstance(a, str) and _ALIAS.match(a) for a in aliases):
            errors["aliases"] = ["Aliases are short names of letters, digits, “-”, “_” or “.” (e.g. champion)."]
        else:
            cleaned["aliases"] = sorted(set(aliases))
    if "tags" in fields:
        cleaned["tags"] = {**_string_dict(fields["tags"], "tags", errors)}
    lineage = {k: fields[k] for k in ("code_repository", "code_commit", "params", "metrics") if k in fields}
    if lineage:
        try:
            checked = clean_lineage(version.project, actor, lineage)
        except ValidationError as exc:
            errors.update(exc.message_dict)
        else:
            cleaned.update({k: checked[k] for k in lineage})
    if errors:
        raise ValidationError(errors)
    changed = {k: v for k, v in cleaned.items() if getattr(version, k) != v}
    if not changed:
        return version
    with transaction.atomic():
        if "aliases" in changed:  # an alias names one version of a model at a time
            for other in version.model.versions.exclude(pk=version.pk):
                kept = [a for a in other.aliases if a not in changed["aliases"]]
                if kept != other.aliases:
                    ModelVersion.objects.filter(pk=other.pk).update(aliases=kept)
        for key, value in changed.items():
            setattr(version, key, value)
        version.save(update_fields=list(changed))
        audit.record("model.version_update", actor=actor, obj=version, details={"fields": sorted(changed)})
    return version


def archive_version(version: ModelVersion, *, actor) -> ModelVersion:
    require(actor, Action.ARCHIVE_MODEL, version)
    with transaction.atomic():
        updated = ModelVersion.objects.filter(
            pk=version.pk, status__in=[ModelVersion.Status.READY, ModelVersion.Status.QUARANTINED,
                                       ModelVersion.Status.FAILED]
        ).update(status=ModelVersion.Status.ARCHIVED, status_before_archive=version.status)
        if not updated:
            state = version.get_status_display().lower()
            raise ValidationError({"status": [f"{version} cannot be archived while it is {state}."]})
        audit.record("model.archive", actor=actor, obj=version, details={"version": version.number})
    version.refresh_from_db()
    return version


def restore_version(version: ModelVersion, *, actor) -> ModelVersion:
    require(actor, Action.ARCHIVE_MODEL, version)
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.ARCHIVED).update(
            status=version.status_before_archive or ModelVersion.Status.READY, status_before_archive=""
        )
        if not updated:
            raise ValidationError({"status": [f"{version} is not archived."]})
        audit.record("model.restore", actor=actor, obj=version, details={"version": version.number})
    version.refresh_from_db()
    return version


def trust_version(version: ModelVersion, *, actor, comment: str = "") -> ModelVersion:
    """A project admin other than the uploader trusts this exact quarantined file; it is then stored as-is."""
    require(actor, Action.TRUST_MODEL, version)
    if version.created_by_id == actor.pk:
        raise ValidationError({"actor": ["You imported this version; another project admin must trust it."]})
    if version.status != ModelVersion.Status.QUARANTINED:
        raise ValidationError({"status": [f"{version} is not quarantined ({version.get_status_display().lower()})."]})
    if version.trusted_sha256 == version.sha256 and version.trusted_by_id:
        raise ValidationError({"status": [f"{version} is already trusted."]})
    with transaction.atomic():
        updated = ModelVersion.objects.filter(
            pk=version.pk, status=ModelVersion.Status.QUARANTINED, trusted_sha256=""
        ).update(trusted_by=actor, trusted_at=timezone.now(), trusted_sha256=version.sha256)
        if not updated:
            raise ValidationError({"status": [f"{version} was trusted or changed meanwhile; reload the page."]})
        version.refresh_from_db()
        version.import_job = _queue_import(version, actor=actor, trusted=True)
        version.save(update_fields=["import_job"])
        audit.record("model.trust", actor=actor, obj=version,
                     details={"version": version.number, "sha256": version.sha256, "comment": comment[:1000],
                              "safety": version.safety.get("verdict", "")})
    return version


def reexamine_version(version: ModelVersion, *, actor, lineage: dict | None = None) -> ModelVersion:
    """Import a quarantined (untrusted) or failed version again, after linking training data or an example.

    This is how a pickle whose conversion could not be checked (no rows to compare predictions on) becomes
    ready without anyone trusting it: link the rows, and the sandboxed conversion runs again.
    """
    require(actor, Action.IMPORT_MODEL, version)
    if version.status not in (ModelVersion.Status.QUARANTINED, ModelVersion.Status.FAILED) or version.trusted_sha256:
        raise ValidationError({"status": [f"{version} is {version.get_status_display().lower()}; only quarantined "
                                          "(untrusted) or failed imports can be examined again."]})
    if not version.file_name:
        raise ValidationError({"status": [f"{version} has no uploaded file to examine again; import it again."]})
    allowed = {"training_dataset", "target_column", "input_example"}
    unknown = set(lineage or {}) - allowed
    if unknown:
        raise ValidationError({name: ["This field cannot be set here."] for name in sorted(unknown)})
    cleaned = clean_lineage(version.project, actor, {k: v for k, v in (lineage or {}).items() if v not in (None, "")})
    with transaction.atomic():
        fields = {"status": ModelVersion.Status.IMPORTING, "error": "", "safety": {}}
        if cleaned.get("training_dataset"):
            fields["training_dataset"] = cleaned["training_dataset"]
            fields["tags"] = {**version.tags, "target_column": cleaned.get("target_column", "")}
        if cleaned.get("input_example"):
            fields["input_example"] = cleaned["input_example"]
        updated = ModelVersion.objects.filter(
            pk=version.pk, status=version.status, trusted_sha256=""
        ).update(**fields)
        if not updated:
            raise ValidationError({"status": [f"{version} changed meanwhile; reload the page."]})
        version.refresh_from_db()
        version.import_job = _queue_import(version, actor=actor)
        version.save(update_fields=["import_job"])
        audit.record("model.reexamine", actor=actor, obj=version,
                     details={"version": version.number, "linked": sorted(k for k in cleaned if cleaned[k])})
    return version
