"""Every change to datasets: create, upload a version, profile it, reveal PII, delete. Atomic and audited."""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, ProtectedError
from django.urls import reverse

from apps.accounts.models import Project
from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.datasets.models import Dataset, DatasetVersion
from apps.datasets.readers import DataFileError, clean_filename, detect_format

logger = logging.getLogger(__name__)

HEAD_BYTES = 8192


def create_dataset(project: Project, *, actor, name: str, description: str = "") -> Dataset:
    require(actor, Action.UPLOAD_DATA, project)
    name = name.strip()
    if not name:
        raise ValidationError({"name": ["Give the dataset a name."]})
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                project=project, name=name[:120], description=description, created_by=actor
            )
            audit.record("dataset.create", actor=actor, obj=dataset, project=project, details={"name": name})
    except IntegrityError:
        raise ValidationError(
            {"name": [f"{project.name} already has a dataset called “{name}”. Upload a new version of it instead."]}
        ) from None
    return dataset


def get_or_create_dataset(project: Project, *, actor, name: str, description: str = "") -> Dataset:
    existing = Dataset.objects.filter(project=project, name=name.strip()).first()
    return existing or create_dataset(project, actor=actor, name=name, description=description)


def upload(project: Project, *, actor, name: str, uploaded, description: str = "",
           dataset: Dataset | None = None) -> tuple[DatasetVersion, bool]:
    """Upload a file as the next version of `dataset`, or of the project's dataset called `name`
    (created if new). Returns (version, created) as upload_version does."""
    if dataset is None:
        dataset = get_or_create_dataset(project, actor=actor, name=name, description=description)
    return upload_version(dataset, actor=actor, uploaded=uploaded, description=description)


def upload_too_large(request) -> str | None:
    """A message if the request body is bigger than the upload limit allows, judged before reading it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    limit = settings.PORTAL_MAX_UPLOAD_BYTES
    if length > limit + 1024 * 1024:  # room for the form's other fields
        return (
            f"The file is larger than the {storage.format_size(limit)} upload limit. "
            "Split it, or ask an operator to raise PORTAL_MAX_UPLOAD_BYTES."
        )
    return None


def _chunks(uploaded, size: int = 1024 * 1024) -> Iterator[bytes]:
    uploaded.seek(0)
    yield from uploaded.chunks(size)


def upload_version(dataset: Dataset, *, actor, uploaded, description: str = "") -> tuple[DatasetVersion, bool]:
    """Store an uploaded file as the dataset's next version and start profiling it.

    `uploaded` is a Django UploadedFile (already spooled to a temp file by Django's upload handlers);
    it is copied to storage in chunks. Returns (version, created): an identical file already in the
    dataset is not stored twice, and (existing version, False) comes back instead.
    """
    require(actor, Action.UPLOAD_DATA, dataset.project)
    filename = clean_filename(uploaded.name)
    uploaded.seek(0)
    head = uploaded.read(HEAD_BYTES)
    try:
        fmt = detect_format(filename, head)
    except DataFileError as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    try:
        stored = storage.save_stream(
            f"datasets/{dataset.uuid}",
            _chunks(uploaded),
            filename=filename,
            max_bytes=settings.PORTAL_MAX_UPLOAD_BYTES,
        )
    except storage.FileTooLarge as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    if stored.size == 0:
        storage.delete(stored.name)
        raise ValidationError({"file": ["The file is empty. Choose a file with a header row and data."]})
    with transaction.atomic():
        _lock_for_numbering(dataset)
        duplicate = dataset.versions.filter(sha256=stored.sha256).order_by("number").first()
        if duplicate is not None:
            transaction.on_commit(lambda: storage.delete(stored.name))
            return duplicate, False
        number = _next_number(dataset)
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=number,
            description=description,
            created_by=actor,
            file_name=stored.name,
            original_filename=filename,
            format=fmt,
            size_bytes=stored.size,
            sha256=stored.sha256,
            encrypted=stored.encrypted,
        )
        version.profile_job = _start_profiling(version, actor=actor)
        version.save(update_fields=["profile_job"])
        audit.record(
            "dataset.upload",
            actor=actor,
            obj=version,
            project=dataset.project,
            details={
                "dataset": dataset.name,
                "version": number,
                "file": version.original_filename,
                "format": fmt,
                "bytes": stored.size,
                "sha256": stored.sha256,
            },
        )
    return version, True


def _lock_for_numbering(dataset: Dataset) -> None:
    """Lock the dataset row for the rest of the transaction, so versions are numbered one at a time."""
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()


def _next_number(dataset: Dataset) -> int:
    return (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1


def _store_file(dataset: Dataset, path: Path, *, filename: str) -> storage.StoredFile:
    """Copy a file the job wrote to a temporary directory into the dataset's storage (encrypted if enabled)."""
    with path.open("rb") as handle:
        return storage.save_stream(f"datasets/{dataset.uuid}", iter(lambda: handle.read(1 << 20), b""),
                                   filename=filename)


def _start_profiling(version: DatasetVersion, *, actor) -> Job:
    from apps.datasets.tasks import profile_version_task

    return jobs.create_job(
        "profile_dataset",
        actor=actor,
        project=version.project,
        params={"version": str(version.uuid)},
        enqueue=profile_version_task,
    )


def profile_version(job_id: str) -> None:
    """The profiling job: read the stored file in batches, profile it, keep a typed Parquet copy."""
    from apps.datasets.profiling import profile_batches
    from apps.datasets.readers import read_batches

    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    version = DatasetVersion.objects.select_related("dataset").get(uuid=job.params["version"])
    if version.status == DatasetVersion.Status.READY:  # finished by an earlier delivery
        jobs.succeed_job(job_id, result={"version": str(version.uuid)}, message="Already profiled")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="portal-profile-") as tmp:
            parquet_path = Path(tmp) / "rows.parquet"

            attempts = []

            def progress(percent: int, message: str) -> None:
                if len(attempts) > 1:
                    message = f"A column changed type late in the file, so it is read again. {message}"
                jobs.report_progress(job_id, min(95, percent), message)

            def profile_and_copy(batches):  # may run twice (see read_batches): the copy is rewritten
                attempts.append(1)
                with _ParquetSink(parquet_path) as sink:
                    return profile_batches(batches, total_bytes=version.size_bytes, progress=progress, sink=sink)

            with storage.open_stream(version.file_name) as source:
                profile = read_batches(source, version.format, profile_and_copy)
            jobs.report_progress(job_id, 96, "Saving a columnar copy for the data grid…")
            parquet = _store_file(version.dataset, parquet_path, filename=f"v{version.number}-rows.parquet")
    except DataFileError as exc:
        _profiling_failed(version, job_id, str(exc))
        return
    except Exception as exc:
        logger.exception("profiling %s failed", version)
        _profiling_failed(
            version,
            job_id,
            "The file could not be profiled because of an internal error. "
            "It has been logged; try again or contact the operators.",
        )
        raise exc from None
    _mark_anonymised_columns(profile, version.transformation)
    with transaction.atomic():
        DatasetVersion.objects.filter(pk=version.pk).update(
            status=DatasetVersion.Status.READY,
            profile=profile,
            parquet_name=parquet.name,
            row_count=profile["row_count"],
            column_count=profile["column_count"],
            schema=[{"name": c["name"], "type": c["type"]} for c in profile["columns"]],
            error="",
        )
        audit.record(
            "dataset.profiled",
            actor=None,
            actor_label="profiling job",
            obj=version,
            project=version.project,
            details={
                "rows": profile["row_count"],
                "columns": profile["column_count"],
                "pii_columns": [c["name"] for c in profile["columns"] if c.get("pii")],
            },
        )
    jobs.succeed_job(
        job_id,
        result={"version": str(version.uuid)},
        message=f"Profiled {profile['row_count']:,} rows × {profile['column_count']} columns",
    )


def _mark_anonymised_columns(profile: dict, transformation: dict | None) -> None:
    """Columns an anonymisation plan masked, hashed or generalised no longer hold personal data as such;
    detection by column name alone would otherwise hide them from viewers again."""
    plan = (transformation or {}).get("plan") or {}
    changed = {name for name, step in plan.items() if (step or {}).get("method") in {"mask", "hash", "generalise"}}
    for column in profile.get("columns", []):
        if column["name"] in changed:
            column["anonymised"] = plan[column["name"]]["method"]
            column["pii"] = None
    profile["warnings"] = [w for w in profile.get("warnings", [])
                           if not (w.get("kind") == "pii" and w.get("column") in changed)]


def _profiling_failed(version: DatasetVersion, job_id: str, message: str) -> None:
    DatasetVersion.objects.filter(pk=version.pk).update(status=DatasetVersion.Status.FAILED, error=message)
    jobs.fail_job(job_id, error=message, message="The file could not be read")


class _ParquetSink:
    """Writes the batches profiling sees into one Parquet file (opened on the first batch's schema)."""

    def __init__(self, path: Path):
        self.path = path
        self.writer = None

    def __enter__(self):
        return self

    def __call__(self, batch) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, batch.schema, compression="zstd")
        self.writer.write_batch(batch)

    def __exit__(self, *exc_info):
        if self.writer is not None:
            self.writer.close()
        elif exc_info[0] is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({}), self.path)  # header-only file: an empty table


def set_column_revealed(version: DatasetVersion, *, actor, column: str, revealed: bool) -> DatasetVersion:
    require(actor, Action.REVEAL_PII, version)
    if column not in version.pii_columns:
        raise ValidationError({"column": [f"“{column}” is not a column flagged as personal data."]})
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        columns = set(version.revealed_columns)
        if (column in columns) == revealed:
            return version
        columns.add(column) if revealed else columns.discard(column)
        version.revealed_columns = sorted(columns)
        version.save(update_fields=["revealed_columns"])
        audit.record(
            "dataset.pii_reveal" if revealed else "dataset.pii_hide",
            actor=actor,
            obj=version,
            project=version.project,
            details={"column": column},
        )
    return version


def delete_dataset(dataset: Dataset, *, actor) -> None:
    """Delete a dataset and its files; refused while a model version references one of its versions."""
    require(actor, Action.DELETE_DATA, dataset.project)
    names = [n for v in dataset.versions.all() for n in (v.file_name, v.parquet_name) if n]
    try:
        with transaction.atomic():
            audit.record(
                "dataset.delete",
                actor=actor,
                obj=dataset,
                project=dataset.project,
                details={"name": dataset.name, "versions": dataset.versions.count()},
            )
            # Derived versions point at their parents (PROTECT): delete children first.
            for version in dataset.versions.order_by("-number"):
                version.delete()
            dataset.delete()
    except ProtectedError as exc:
        users = ", ".join(sorted({str(o) for o in exc.protected_objects})[:5])
        raise ValidationError(
            {
                "dataset": [
                    f"“{dataset.name}” cannot be deleted: it is referenced by {users}. Remove those references first."
                ]
            }
        ) from None
    transaction.on_commit(lambda: [storage.delete(n) for n in names])


# --- Anonymisation -------------------------------------------------------------------------------------


def _hash_key(project: Project) -> bytes:
    # Keyed per project: tokens join across versions of one project, but not across projects.
    secret = (settings.PORTAL_ENCRYPTION_KEY or settings.SECRET_KEY).encode()
    return hmac.new(secret, f"anonymise:{project.slug}".encode(), hashlib.sha256).digest()


def start_anonymisation(version: DatasetVersion, *, actor, plan: dict, description: str = "") -> Job:
    """Validate a per-column plan and start the job that writes the anonymised version."""
    from apps.datasets.anonymise import PlanError, nice_width, validate_plan
    from apps.datasets.tasks import anonymise_version_task

    require(actor, Action.UPLOAD_DATA, version)
    if version.status != DatasetVersion.Status.READY:
        raise ValidationError({"version": ["Wait until this version has been profiled."]})
    try:
        plan = validate_plan(plan, version.schema)
    except PlanError as exc:
        raise ValidationError({"plan": [str(exc)]}) from None
    if all(step["method"] == "keep" for step in plan.values()):
        raise ValidationError({"plan": ["Choose at least one column to drop, mask, hash or generalise."]})
    columns = {c["name"]: c for c in version.profile["columns"]}
    for name, step in plan.items():
        if step["method"] == "generalise" and "level" not in step and step.get("width") is None:
            numeric = columns[name].get("numeric") or {}
            step["width"] = nice_width(numeric.get("min") or 0, numeric.get("max") or 0)
    with transaction.atomic():
        job = jobs.create_job(
            "anonymise_dataset",
            actor=actor,
            project=version.project,
            params={"version": str(version.uuid), "plan": plan, "description": description},
            enqueue=anonymise_version_task,
        )
        audit.record(
            "dataset.anonymise",
            actor=actor,
            obj=version,
            project=version.project,
            details={"plan": plan, "job": str(job.id)},
        )
    return job


def anonymise(job_id: str) -> None:
    """The anonymisation job: transform the version's rows batch by batch into a new derived version."""
    import pyarrow.parquet as pq

    from apps.datasets.anonymise import apply_plan

    if not jobs.start_job(job_id):
        return
    job = Job.objects.select_related("created_by").get(pk=job_id)
    source = DatasetVersion.objects.select_related("dataset__project").get(uuid=job.params["version"])
    done = DatasetVersion.objects.filter(parent=source, transformation__job=str(job.id)).first()
    if done is not None:  # a redelivered task: the version exists already
        jobs.succeed_job(job_id, result={"version": done.number}, message=f"Created v{done.number}")
        return
    plan, key = job.params["plan"], _hash_key(source.project)
    with tempfile.TemporaryDirectory(prefix="portal-anonymise-") as tmp:
        out_path = Path(tmp) / "anonymised.parquet"
        with storage.open_stream(source.parquet_name) as handle:
            parquet = pq.ParquetFile(handle)
            total, writer = max(1, parquet.metadata.num_rows), None
            done_rows = 0
            for batch in parquet.iter_batches(batch_size=65_536):
                result = apply_plan(batch, plan, key=key)
                if writer is None:
                    writer = pq.ParquetWriter(out_path, result.schema, compression="zstd")
                writer.write_batch(result)
                done_rows += batch.num_rows
                jobs.report_progress(job_id, int(90 * done_rows / total), f"Anonymised {done_rows:,} rows…")
            if writer is None:  # a header-only file: keep its (transformed) columns
                empty = apply_plan(_empty_batch(parquet.schema_arrow), plan, key=key)
                writer = pq.ParquetWriter(out_path, empty.schema)
            writer.close()
        stored = _store_file(source.dataset, out_path, filename=f"v{source.number}-anonymised.parquet")
    with transaction.atomic():
        _lock_for_numbering(source.dataset)
        number = _next_number(source.dataset)
        version = DatasetVersion.objects.create(
            dataset=source.dataset,
            number=number,
            created_by=job.created_by,
            description=job.params.get("description") or f"Anonymised from v{source.number}",
            file_name=stored.name,
            original_filename=f"{source.dataset.name}-v{number}-anonymised.parquet"[:255],
            format=DatasetVersion.Format.PARQUET,
            size_bytes=stored.size,
            sha256=stored.sha256,
            encrypted=stored.encrypted,
            parent=source,
            transformation={"kind": "anonymise", "plan": plan, "source_version": source.number, "job": str(job.id)},
        )
        version.profile_job = _start_profiling(version, actor=job.created_by)
        version.save(update_fields=["profile_job"])
        audit.record(
            "dataset.derive",
            actor=job.created_by,
            obj=version,
            project=source.project,
            details={"parent": source.number, "version": number, "plan": plan, "sha256": stored.sha256},
        )
    jobs.succeed_job(
        job_id,
        result={
            "version": number,
            "dataset": str(source.dataset.uuid),
            "url": reverse("dataset-version", args=[source.dataset.uuid, number]),
        },
        message=f"Created v{number}; it is being profiled",
    )


def _empty_batch(schema):
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


# --- Comparing versions -----------------------------------------------------------------------------------


def compare_versions(base: DatasetVersion, other: DatasetVersion, *, user):
    """What changed from `base` to `other`: schema, types and per-column shift (as a validation report)."""
    from apps.datasets.models import redact_profile
    from apps.datasets.validation import validate

    hidden = base.hidden_columns_for(user) | other.hidden_columns_for(user)
    return validate(redact_profile(other.profile, hidden), reference=redact_profile(base.profile, hidden))
