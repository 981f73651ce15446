"""Batch scoring: a file or dataset version scored by a deployment's champion, in chunks that several workers share.

The job, step by step (every step safe to run twice, since tasks are acknowledged late):
1. `start_batch` (the service the page and the API call) stores the upload, creates the BatchRun, its Job and an
   audit event, and enqueues `prepare` after commit. The champion at that moment scores the whole batch.
2. `prepare` reads the input once, in chunks of PORTAL_BATCH_CHUNK_ROWS rows (default 20,000; the web process's
   value when the run started, recorded on the job): each chunk is
   checked against the signature exactly as the invocations endpoint checks a request (protocol.check_rows),
   with row numbers counted over the whole file, and stored as a Parquet part. A bad column or value fails the
   job with that message before any row is scored. It then records the parts on the job and sends a Celery
   `group` of `score_chunk` tasks.
3. Each `score_chunk` loads the model once per worker process, predicts its part, stores a result part, writes
   one prediction log record, and marks its chunk done under a row lock (so a redelivered chunk counts once).
   The chunk that completes the set assembles the result CSV: the input columns, the prediction column(s),
   `request_id` and `row` (0-based over the whole input, as rows are numbered within an online request).

Prediction log: one record per chunk, source "batch", with the run's request id. A chunk of at most
PORTAL_BATCH_LOG_ROWS rows (default 1,000) is logged in full, inputs as {"columns", "data"} and the outputs, like
an online request; a bigger chunk logs its row count and a reference instead of megabytes of JSON:
inputs = {"batch": "<run uuid>", "rows": [start, end]} (end exclusive), outputs = null; the rows themselves are
in the run's result file.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.exports import spreadsheet_safe_table
from apps.core.models import Job
from apps.datasets.models import DatasetVersion
from apps.datasets.readers import ROWS_KEY, DataFileError, clean_filename, detect_format, iter_batches
from apps.deployments import predlog, protocol
from apps.deployments.models import BatchRun, Deployment

logger = logging.getLogger(__name__)

JOB_KIND = "batch_score"
HEAD_BYTES = 64 * 1024
PREPARE_SHARE = 10  # percent of the job's progress spent reading and checking the input
_ROW_IN_MESSAGE = re.compile(r"\brow (\d+)\b")


class BatchRefused(Exception):
    """The deployment cannot score a batch now (stopped, or its champion can no longer serve)."""


def chunk_rows() -> int:
    return max(1, int(settings.PORTAL_BATCH_CHUNK_ROWS))


def log_rows() -> int:
    return int(settings.PORTAL_BATCH_LOG_ROWS)


# --- Starting ---------------------------------------------------------------------------------------------------


def dataset_versions_for(deployment: Deployment):
    """The dataset versions a batch of this deployment may score: ready ones of the same project."""
    return (DatasetVersion.objects.filter(dataset__project=deployment.project, status=DatasetVersion.Status.READY)
            .exclude(parquet_name="").select_related("dataset").order_by("dataset__name", "-number"))


def _chunks(uploaded, size: int = 1024 * 1024):
    uploaded.seek(0)
    yield from uploaded.chunks(size)


def _store_upload(deployment: Deployment, uploaded) -> tuple[storage.StoredFile, str]:
    filename = clean_filename(uploaded.name)
    uploaded.seek(0)
    head = uploaded.read(HEAD_BYTES)
    try:
        fmt = detect_format(filename, head)
    except DataFileError as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    try:
        stored = storage.save_stream(f"batch/{deployment.uuid}", _chunks(uploaded), filename=filename,
                                     max_bytes=settings.PORTAL_MAX_UPLOAD_BYTES)
    except storage.FileTooLarge as exc:
        raise ValidationError({"file": [str(exc)]}) from None
    if stored.size == 0:
        storage.delete(stored.name)
        raise ValidationError({"file": ["The file is empty. Choose a file with a header row and data."]})
    return stored, fmt


def start_batch(deployment: Deployment, *, actor, uploaded=None, dataset_version: DatasetVersion | None = None,
                keep_extra_columns: bool = False) -> BatchRun:
    """Score a file (a Django UploadedFile) or a dataset version of the project with the current champion.

    Anyone who may call the deployment may score a batch. `keep_extra_columns` carries columns the model does not
    take (ids, the label) into the result unscored; without it they are refused, as the invocations endpoint does.
    """
    require(actor, Action.PREDICT, deployment)
    if (uploaded is None) == (dataset_version is None):
        raise ValidationError({"file": ["Upload a file or choose a dataset version (one of the two)."]})
    if deployment.status != Deployment.Status.ACTIVE:
        raise BatchRefused("This deployment is stopped: resume it to score files.")
    champion = deployment.champion
    if not champion.is_servable:
        raise BatchRefused(f"{champion.model.name} v{champion.number} can no longer serve "
                           f"({champion.get_status_display().lower()}): promote another version first.")
    omit: list[str] = []
    stored, fmt = None, "parquet"
    if dataset_version is not None:
        if dataset_version.dataset.project_id != deployment.project_id:
            raise ValidationError({"dataset_version": ["No such dataset version in this project."]})
        if dataset_version.status != DatasetVersion.Status.READY or not dataset_version.parquet_name:
            raise ValidationError({"dataset_version": [
                f"{dataset_version} is not ready ({dataset_version.get_status_display().lower()}): wait for its "
                "profiling to finish, or choose another version."]})
        # Personal data this caller may not see stays out of the result file (the model still gets it).
        omit = sorted(dataset_version.hidden_columns_for(actor))
        source_name = f"{dataset_version.dataset.name} v{dataset_version.number}"
    else:
        stored, fmt = _store_upload(deployment, uploaded)
        source_name = clean_filename(uploaded.name)  # shown to other members and audited: no NUL, bidi, paths
    try:
        with transaction.atomic():
            from apps.deployments.tasks import prepare_batch_task

            job = jobs.create_job(JOB_KIND, actor=actor, project=deployment.project,
                                  params={"deployment": deployment.slug, "format": fmt,
                                          "keep_extra": keep_extra_columns, "omit": omit,
                                          "chunk_rows": chunk_rows()},
                                  enqueue=prepare_batch_task)
            run = BatchRun.objects.create(
                deployment=deployment, model_version=champion, job=job, source_name=source_name,
                dataset_version=dataset_version, input_file=stored.name if stored else "",
                request_id=uuid.uuid4().hex, created_by=actor)
            job.params["batch"] = str(run.uuid)
            job.save(update_fields=["params"])
            details = {"batch": str(run.uuid), "request_id": run.request_id, "source": source_name,
                       "model_version": f"{champion.model.slug} v{champion.number}", "keep_extra_columns":
                       keep_extra_columns}
            if stored:
                details.update(bytes=stored.size, sha256=stored.sha256, format=fmt)
            else:
                details["dataset_version"] = str(dataset_version.uuid)
            audit.record("deployment.batch_started", actor=actor, obj=deployment, project=deployment.project,
                         details=details)
    except BaseException:
        if stored:
            storage.delete(stored.name)
        raise
    return run


# --- Reading and checking ---------------------------------------------------------------------------------------


def _signature(run: BatchRun) -> list[dict]:
    from apps.registry.evidence.predictor import input_columns

    return input_columns(run.model_version)


def _text(value) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value, parse):
    if isinstance(value, float) and value != value:
        return None  # NaN in a file is a missing value
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    try:
        return parse(text)
    except ValueError:
        return value  # check_rows names it, with its row


_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _values(array, kind: str) -> list:
    """A column as the JSON-like values check_rows expects. A file has no JSON types, so a column the reader kept as
    text (one bad cell makes the whole column text) still gives numbers where its cells are numbers; text columns
    take numbers as text, dates come as ISO text, and NaN or an empty cell is a missing value."""
    values = array.to_pylist()
    if kind in protocol.INTEGER_TYPES:
        return [_number(v, int) for v in values]
    if kind in protocol.FLOAT_TYPES:
        return [_number(v, float) for v in values]
    if kind == "boolean":
        return [_BOOLEANS.get(v.strip().lower(), v) if isinstance(v, str) else v for v in values]
    if kind in ("string", "datetime"):
        return [v if v is None or isinstance(v, str) else _text(v) for v in values]
    return values


def _model_table(table, inputs: list[dict], *, keep_extra: bool) -> protocol.Table:
    """The part's rows the model takes, as protocol.check_rows reads a request."""
    kinds = {c["name"]: c.get("type", "string") for c in inputs}
    names = [n for n in table.column_names if not keep_extra or not inputs or n in kinds]
    columns = [_values(table.column(n), kinds.get(n, "")) for n in names]
    rows = [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in range(table.num_rows)]
    return protocol.Table(names, rows)


def _check(table, inputs: list[dict], *, start: int, keep_extra: bool):
    """(checked DataFrame, the Table it came from); PayloadError naming the column and the row in the whole input."""
    model_table = _model_table(table, inputs, keep_extra=keep_extra)
    try:
        return protocol.check_rows(model_table, inputs, max_rows=max(1, table.num_rows)), model_table
    except protocol.PayloadError as exc:
        message = exc.message
        if _ROW_IN_MESSAGE.search(message):
            row = start + int(_ROW_IN_MESSAGE.search(message).group(1))
            message = _ROW_IN_MESSAGE.sub(f"row {row:,}", message, count=1)
            message += (f" (Rows are counted from 0 after the header row, as in the result's row column: in a CSV "
                        f"or spreadsheet this is line {row + 2:,}.)")
        elif exc.field in table.column_names and exc.field not in {c["name"] for c in inputs}:
            message += (" Remove that column, or keep extra columns (the option on the form, keep_extra_columns in "
                        "the API) to carry it into the result unscored.")
        raise protocol.PayloadError(message, field=exc.field) from None


def _parquet_bytes(table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _read_part(name: str):
    import pyarrow.parquet as pq

    with storage.open_stream(name) as handle:
        return pq.read_table(handle)


def _input(run: BatchRun, job: Job):
    """(stream, format) of the run's input: the upload as stored, or the dataset version's typed Parquet copy."""
    if run.dataset_version_id:
        return storage.open_stream(run.dataset_version.parquet_name), "parquet"
    return storage.open_stream(run.input_file), job.params.get("format", "csv")


def _split(run: BatchRun, job: Job) -> list[dict]:
    """Read, check and store the input as parts of chunk_rows() rows: [{"name", "start", "rows"}]."""
    import pyarrow as pa

    inputs = _signature(run)
    keep_extra = bool(job.params.get("keep_extra"))
    size = int(job.params.get("chunk_rows") or chunk_rows())
    parts: list[dict] = []
    pending: list = []
    pending_rows = 0
    total = run.dataset_version.row_count if run.dataset_version_id else None

    def emit(table) -> None:
        start = sum(p["rows"] for p in parts)
        _check(table, inputs, start=start, keep_extra=keep_extra)
        stored = storage.save_stream(f"batch/{run.deployment.uuid}/{run.uuid}", [_parquet_bytes(table)],
                                     filename=f"part-{len(parts):05d}.parquet")
        parts.append({"name": stored.name, "start": start, "rows": table.num_rows})
        read = start + table.num_rows
        jobs.report_progress(job.pk, int(PREPARE_SHARE * read / total) if total else 1,
                             f"Checking the input: {read:,}{f' of {total:,}' if total else ''} rows read…")

    try:
        stream, fmt = _input(run, job)
        with stream:
            schema = None
            for batch in iter_batches(stream, fmt, batch_rows=min(size, 65_536)):
                if schema is None:
                    schema = batch.schema
                    known = (schema.metadata or {}).get(ROWS_KEY)
                    total = total or (int(known) if known else None)
                if batch.num_rows:
                    pending.append(batch)
                    pending_rows += batch.num_rows
                while pending_rows >= size:
                    table = pa.Table.from_batches(pending, schema=schema)
                    emit(table.slice(0, size))
                    rest = table.slice(size)
                    pending, pending_rows = rest.to_batches(), rest.num_rows
            if pending_rows:
                emit(pa.Table.from_batches(pending, schema=schema))
    except BaseException:
        _delete([p["name"] for p in parts])
        raise
    if not parts:
        raise protocol.PayloadError("The input has a header but no rows to score.")
    return parts


def _delete(names) -> None:
    for name in names:
        try:
            storage.delete(name)
        except Exception:  # cleaning up is best effort; a leftover part is only wasted space
            logger.warning("batch scoring: could not delete %s", name, exc_info=True)


# --- The job ------------------------------------------------------------------------------------------------------


def _log(run: BatchRun, *, status: int, started: float | None = None, rows: int = 0, inputs=None, outputs=None,
         error: str = "", record_id: str | None = None) -> None:
    caller = run.created_by.username if run.created_by_id else ""
    record = predlog.new_record(
        request_id=run.request_id, deployment_id=run.deployment_id, version_id=run.model_version_id, source="batch",
        latency_ms=round((time.perf_counter() - started) * 1000, 3) if started is not None else None, status=status,
        caller=caller, caller_id=run.created_by_id, row_count=rows, inputs=inputs, outputs=outputs, error=error)
    if record_id:
        record["r"] = record_id  # the same record for a redelivered chunk: inserted once
    try:
        predlog.push(record)
    except Exception:
        logger.exception("prediction log: could not buffer batch record %s", record["r"])
        predlog.insert([record])


def _fail(run: BatchRun, job_id: str, error: str, *, message: str = "Batch scoring failed", status: int = 400) -> None:
    updated = Job.objects.filter(pk=job_id).exclude(status__in=Job.FINISHED).count()
    jobs.fail_job(job_id, error=error, message=message)
    if updated:
        _log(run, status=status, error=error, record_id=uuid.uuid5(run.uuid, "failed").hex)
        manifest = Job.objects.get(pk=job_id).result or {}
        _delete([p["name"] for p in manifest.get("parts", [])] + list(manifest.get("done", {}).values()))


def _run_for(job_id: str) -> BatchRun | None:
    return (BatchRun.objects.select_related("deployment", "model_version__model", "dataset_version", "created_by",
                                            "job").filter(job_id=job_id).first())


def prepare(job_id: str) -> None:
    """The job's first task: check and split the input, then send the chunks to the workers."""
    run = _run_for(job_id)
    if run is None or run.job.is_finished:
        return
    if run.chunk_count:  # a redelivery after the split: send again the chunks not done (each runs once)
        done = (run.job.result or {}).get("done", {})
        _dispatch(job_id, [i for i in range(run.chunk_count) if str(i) not in done])
        return
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    jobs.report_progress(job_id, 0, "Reading and checking the input…")
    try:
        parts = _split(run, job)
    except (protocol.PayloadError, DataFileError) as exc:
        _fail(run, job_id, str(exc.message if isinstance(exc, protocol.PayloadError) else exc),
              message="The input does not match the model's signature" if isinstance(exc, protocol.PayloadError)
              else "The file could not be read")
        return
    except storage.DecryptionError as exc:
        _fail(run, job_id, str(exc), message="The input could not be read")
        return
    rows = sum(p["rows"] for p in parts)
    with transaction.atomic():
        Job.objects.filter(pk=job_id).update(result={"parts": parts, "done": {}})
        BatchRun.objects.filter(pk=run.pk).update(row_count=rows, chunk_count=len(parts), chunks_done=0)
        jobs.report_progress(job_id, PREPARE_SHARE, f"Scoring {rows:,} rows in {len(parts)} chunk(s)…")
        transaction.on_commit(lambda: _dispatch(job_id, list(range(len(parts)))))


def _dispatch(job_id: str, indexes: list[int]) -> None:
    from celery import group

    from apps.deployments.tasks import score_batch_chunk_task

    if indexes:
        group(score_batch_chunk_task.si(job_id, i) for i in indexes).apply_async()


_models: dict[tuple[int, str], object] = {}
_models_lock = threading.Lock()


def serving_model(version):
    """The version as served, loaded once per worker process (keyed by its stored model too, never stale)."""
    from apps.deployments.serving import load_serving_model

    key = (version.pk, version.mlflow_model_uri)
    model = _models.get(key)
    if model is None:
        with _models_lock:
            model = _models.get(key)
            if model is None:
                if len(_models) >= 8:  # a worker that scored many versions keeps only what it uses now
                    _models.clear()
                model = _models[key] = load_serving_model(version)
    return model


def _prefixed(name: str) -> str:
    name = str(name)
    return name if name.startswith("prediction") else f"prediction_{name}"


def prediction_columns(predictions, rows: int) -> dict[str, list]:
    """The model's answer (as protocol.predictions_list shapes it) as named result columns of `rows` values."""
    if isinstance(predictions, dict):  # one output per name (e.g. ONNX)
        columns = {}
        for name, values in predictions.items():
            for key, column in prediction_columns(values, rows).items():
                columns[_prefixed(name) + key.removeprefix("prediction")] = column
        return columns
    if len(predictions) != rows:
        raise ValueError(f"the model returned {len(predictions):,} predictions for {rows:,} rows")
    if predictions and all(isinstance(p, dict) for p in predictions):
        keys = list(dict.fromkeys(k for p in predictions for k in p))
        if len(keys) == 1:
            return {"prediction": [p.get(keys[0]) for p in predictions]}
        return {_prefixed(k): [p.get(k) for p in predictions] for k in keys}
    if predictions and all(isinstance(p, list) for p in predictions):
        width = max(len(p) for p in predictions)
        return {f"prediction_{i}": [p[i] if i < len(p) else None for p in predictions] for i in range(width)}
    return {"prediction": list(predictions)}


def _array(values: list):
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _result_table(table, predictions: list, run: BatchRun, *, start: int, omit: set[str]):
    import pyarrow as pa

    out = table.select([n for n in table.column_names if n not in omit])
    taken = set(out.column_names)

    def unique(name: str) -> str:
        while name in taken:
            name = f"{name}_"
        taken.add(name)
        return name

    for name, values in prediction_columns(predictions, table.num_rows).items():
        out = out.append_column(unique(name), _array(values))
    out = out.append_column(unique("request_id"), pa.array([run.request_id] * table.num_rows, type=pa.string()))
    return out.append_column(unique("row"), pa.array(range(start, start + table.num_rows), type=pa.int64()))


def score_chunk(job_id: str, index: int) -> None:
    """One chunk: predict, store the result part, log, count it done once; the last one assembles the result."""
    run = _run_for(job_id)
    if run is None or run.job.is_finished:
        return
    manifest = run.job.result or {}
    if str(index) in manifest.get("done", {}):
        _finish_if_complete(job_id)  # a redelivery: its work is counted; the assembly may be what was lost
        return
    part = manifest["parts"][index]
    start, rows = part["start"], part["rows"]
    label = f"{run.model_version.model.name} v{run.model_version.number}"
    began = time.perf_counter()
    try:
        model = serving_model(run.model_version)
        table = _read_part(part["name"])
        frame, model_table = _check(table, _signature(run), start=start, keep_extra=bool(run.job.params.get(
            "keep_extra")))
        predictions = protocol.predictions_list(model.predict(frame))
        result = _result_table(table, predictions, run, start=start, omit=set(run.job.params.get("omit") or []))
        stored = storage.save_stream(f"batch/{run.deployment.uuid}/{run.uuid}", [_parquet_bytes(result)],
                                     filename=f"result-{index:05d}.parquet")
    except Exception as exc:
        if Job.objects.filter(pk=job_id, status__in=Job.FINISHED).exists():
            return  # the job already failed (another chunk); its parts may be gone
        logger.warning("batch %s chunk %s failed", run.uuid, index, exc_info=True)
        detail = (f"Chunk {index + 1} of {run.chunk_count} (rows {start:,}–{start + rows - 1:,}) failed: the model "
                  f"({label}) raised {type(exc).__name__}: {str(exc)[:300]}. The rows were valid against its "
                  "signature; if this keeps happening, roll back or fix the model.")
        _fail(run, job_id, detail, status=502)
        return
    if rows <= log_rows():
        inputs, outputs = {"columns": model_table.columns, "data": model_table.rows}, predictions
    else:
        inputs, outputs = {"batch": str(run.uuid), "rows": [start, start + rows]}, None
    _log(run, status=200, started=began, rows=rows, inputs=inputs, outputs=outputs,
         record_id=uuid.uuid5(run.uuid, f"chunk-{index}").hex)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id)
        manifest = job.result or {}
        done = manifest.setdefault("done", {})
        if job.is_finished or str(index) in done:
            transaction.on_commit(lambda: _delete([stored.name]))  # a duplicate delivery: keep the first result
            return
        done[str(index)] = stored.name
        count = len(manifest["parts"])
        progress = PREPARE_SHARE + int((100 - PREPARE_SHARE - 2) * len(done) / count)
        scored = sum(p["rows"] for i, p in enumerate(manifest["parts"]) if str(i) in done)
        Job.objects.filter(pk=job_id).update(
            result=manifest, progress=max(job.progress, progress),
            message=f"Scored {len(done)} of {count} chunk(s): {scored:,} of {run.row_count or 0:,} rows…")
        BatchRun.objects.filter(pk=run.pk).update(chunks_done=F("chunks_done") + 1)
    _finish_if_complete(job_id)


def _csv_pieces(names: list[str]):
    import pyarrow.csv as pacsv

    for position, name in enumerate(names):
        # The input's text and the model's answers go back to someone's spreadsheet: no cell may run there.
        table = spreadsheet_safe_table(_read_part(name))
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer, write_options=pacsv.WriteOptions(include_header=position == 0))
        yield buffer.getvalue()


def _finish_if_complete(job_id: str) -> None:
    """If every chunk is done and the job still runs, write the result CSV and succeed the job (once)."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_finished:
        return
    manifest = job.result or {}
    parts, done = manifest.get("parts") or [], manifest.get("done") or {}
    if not parts or len(done) < len(parts):
        return
    run = _run_for(job_id)
    jobs.report_progress(job_id, 98, "Writing the scored file…")
    names = [done[str(i)] for i in range(len(parts))]
    try:
        stored = storage.save_stream(f"batch/{run.deployment.uuid}", _csv_pieces(names),
                                     filename=f"{run.deployment.slug}-{run.request_id[:8]}-scored.csv")
    except Exception as exc:
        logger.exception("batch %s: could not write the result", run.uuid)
        _fail(run, job_id, f"The scored file could not be written ({type(exc).__name__}: {exc}). Try again.",
              status=500)
        return
    rows = sum(p["rows"] for p in parts)
    with transaction.atomic():
        won = BatchRun.objects.filter(pk=run.pk, result_file="").update(result_file=stored.name)
        if not won:
            transaction.on_commit(lambda: _delete([stored.name]))
            return
        jobs.succeed_job(job_id, result={"batch": str(run.uuid), "rows": rows, "chunks": len(parts),
                                         "request_id": run.request_id},
                         message=f"Scored {rows:,} rows in {len(parts)} chunk(s)")
        transaction.on_commit(lambda: _delete([p["name"] for p in parts] + names))
