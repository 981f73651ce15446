"""The prediction log as a file (admins): one line per scored row, CSV streamed as it is read, Parquet built on a
temporary file in row-group batches and then streamed. Every export is audited with its filters and row count.

A line: request_id, row (from 0, as in the request), created_at, deployment, model, model_version, role, source,
status_code, latency_ms, caller, each input column, prediction, error. A rejected request (no rows) is one line
with an empty row number, so errors are in the file too. Predictions that are objects or lists are JSON text.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

from django.db import transaction
from django.db.models import Max, Q, Sum, Value
from django.db.models.functions import Greatest
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone

from apps.audit import services as audit
from apps.core.exports import spreadsheet_safe
from apps.deployments.models import Deployment
from apps.registry.models import ModelVersion

FORMATS = ("csv", "parquet")
FILTERS = ("status", "role", "source", "version", "request_id", "from", "to")
META = ["request_id", "row", "created_at", "deployment", "model", "model_version", "role", "source", "status_code",
        "latency_ms", "caller"]
TAIL = ["prediction", "error"]
CHUNK = 2000  # log records read per database round trip
PARQUET_ROWS = 20_000  # lines per row group


@dataclass
class Plan:
    """What an export will write: the records (bounded so rows logged meanwhile do not change it) and the header."""

    deployment: Deployment
    records: object  # a PredictionLog queryset, oldest first
    inputs: list[str]  # input column names, in header order
    positional: dict[int | None, list[str]] = field(default_factory=dict)  # names for rows sent without columns
    row_count: int = 0

    @property
    def header(self) -> list[str]:
        taken = set(META) | set(TAIL)
        return [*META, *(f"input_{name}" if name in taken else name for name in self.inputs), *TAIL]


def plan(deployment: Deployment, records) -> Plan:
    """Fix the export of `records` (already filtered): its last record, its input columns and its line count."""
    last = records.aggregate(last=Max("id"))["last"]
    records = records.filter(id__lte=last or 0).order_by("created_at", "id")
    lines = records.aggregate(n=Sum(Greatest("row_count", Value(1))))["n"] or 0
    version_ids = set(records.order_by().values_list("model_version_id", flat=True).distinct())
    versions = {v.pk: v for v in ModelVersion.objects.filter(pk__in=[v for v in version_ids if v])
                .order_by("model_id", "number")}
    inputs: list[str] = []
    positional: dict[int | None, list[str]] = {}
    unsigned: list[int] = []
    for version in versions.values():
        names = [c["name"] for c in (version.signature or {}).get("inputs") or [] if c.get("name")]
        if names:
            positional[version.pk] = names
            inputs.extend(n for n in names if n not in inputs)
        else:
            unsigned.append(version.pk)
    if unsigned or None in version_ids:
        # Versions without a named signature: their records name their own columns, so read them once for those.
        seen = records.filter(Q(model_version__in=unsigned) | Q(model_version__isnull=True)).order_by()
        for logged in seen.values_list("inputs", flat=True).iterator(chunk_size=CHUNK):
            for name in _columns(logged, None):
                if name not in inputs:
                    inputs.append(name)
    return Plan(deployment=deployment, records=records, inputs=inputs, positional=positional, row_count=lines)


def _columns(logged, names: list[str] | None) -> list[str]:
    if not isinstance(logged, dict):
        return []
    if logged.get("columns"):
        return [str(c) for c in logged["columns"]]
    rows = logged.get("data") or []
    width = len(rows[0]) if rows and isinstance(rows[0], list) else 0
    if names and len(names) == width:
        return names
    return [f"input_{i}" for i in range(width)]


def _cell(value):
    """A scalar as it is; an object or a list as JSON text (one cell, whatever the model answered)."""
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return value


def _prediction(outputs, index: int):
    if isinstance(outputs, list):
        return _cell(outputs[index]) if index < len(outputs) else None
    if isinstance(outputs, dict):  # one list per output name (e.g. ONNX)
        return _cell({k: (v[index] if isinstance(v, list) and index < len(v) else v) for k, v in outputs.items()})
    return None


def lines(export: Plan) -> Iterator[list]:
    """Every line of the export as Python values (created_at a datetime), in header order."""
    slug = export.deployment.slug
    width = len(export.inputs)
    position = {name: i for i, name in enumerate(export.inputs)}
    records = export.records.select_related("model_version__model")
    for record in records.iterator(chunk_size=CHUNK):
        version = record.model_version
        head = [record.request_id, None, record.created_at, slug, version.model.slug if version else None,
                version.number if version else None, record.role, record.source, record.status_code,
                record.latency_ms, record.caller]
        logged = record.inputs if isinstance(record.inputs, dict) else {}
        columns = _columns(logged, export.positional.get(record.model_version_id))
        rows = logged.get("data") or []
        count = max(record.row_count, len(rows))
        if not count:  # a rejected request: one line, so the error is in the file too
            yield [*head, *([None] * width), None, record.error]
            continue
        for index in range(count):
            values = [None] * width
            row = rows[index] if index < len(rows) and isinstance(rows[index], list) else []
            for name, value in zip(columns, row, strict=False):
                if name in position:
                    values[position[name]] = _cell(value)
            head[1] = index
            yield [*head, *values, _prediction(record.outputs, index), record.error]


# --- Audit ------------------------------------------------------------------------------------------------------


def used_filters(params) -> dict:
    return {name: params[name] for name in FILTERS if params.get(name)}


def record_export(deployment: Deployment, *, actor, fmt: str, filters: dict, rows: int) -> None:
    """Audit one export: who took which rows of the log out of the portal, in which format."""
    with transaction.atomic():
        audit.record("deployment.predictions_export", actor=actor, obj=deployment,
                     details={"deployment": deployment.slug, "format": fmt, "filters": filters, "rows": rows})


def _filename(deployment: Deployment, fmt: str) -> str:
    return f"{deployment.slug}-predictions-{timezone.now():%Y%m%d-%H%M%S}.{fmt}"


# --- CSV --------------------------------------------------------------------------------------------------------


class _Echo:
    def write(self, value):
        return value


def _csv_value(value):
    # Inputs, predictions, errors and the caller come from outside: a cell must never run in a spreadsheet.
    if hasattr(value, "isoformat"):
        return value.astimezone(UTC).isoformat()
    return spreadsheet_safe(value)


def csv_chunks(export: Plan) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow([spreadsheet_safe(name) for name in export.header])
    for line in lines(export):
        yield writer.writerow([_csv_value(v) for v in line])


def csv_response(export: Plan) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_chunks(export), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{_filename(export.deployment, "csv")}"'
    return response


# --- Parquet ----------------------------------------------------------------------------------------------------


def _fixed_types():
    import pyarrow as pa

    return [pa.string(), pa.int64(), pa.timestamp("us", tz="UTC"), pa.string(), pa.string(), pa.int64(),
            pa.string(), pa.string(), pa.int32(), pa.float64(), pa.string()]


def _array(values: list, kind=None):
    """An Arrow column: of `kind` when fixed, else inferred; text when the values do not share one type."""
    import pyarrow as pa

    try:
        return pa.array(values, type=kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values], type=pa.string())


def _table(batch: list[list], header: list[str]):
    import pyarrow as pa

    fixed = _fixed_types()
    columns = list(zip(*batch, strict=True)) if batch else [[] for _ in header]
    arrays = [_array(list(values), fixed[i] if i < len(fixed) else (pa.string() if not batch else None))
              for i, values in enumerate(columns)]
    return pa.table(arrays, names=header)


def _unified(schemas: list):
    """One schema for parts written with different inferred types: whole numbers and decimals become decimals,
    anything else mixed becomes text; a column that is empty everywhere stays null."""
    import pyarrow as pa

    fields = []
    for index, first in enumerate(schemas[0]):
        kinds = {s.field(index).type for s in schemas} - {pa.null()}
        if len(kinds) <= 1:
            kind = kinds.pop() if kinds else pa.null()
        elif kinds <= {pa.int64(), pa.float64()}:
            kind = pa.float64()
        else:
            kind = pa.string()
        fields.append(pa.field(first.name, kind))
    return pa.schema(fields)


def write_parquet(export: Plan, path: Path) -> int:
    """Write the export to `path` in row groups of PARQUET_ROWS lines; returns the number of lines."""
    import pyarrow.parquet as pq

    header = export.header
    directory = path.parent
    parts: list[tuple[Path, object]] = []
    writer = None
    count = 0

    def flush(batch):
        nonlocal writer
        table = _table(batch, header)
        if writer is None or table.schema != writer.schema:
            if writer is not None:
                writer.close()
            part = directory / f"part-{len(parts)}.parquet"
            writer = pq.ParquetWriter(part, table.schema)
            parts.append((part, table.schema))
        writer.write_table(table)

    batch: list[list] = []
    try:
        for line in lines(export):
            batch.append(line)
            count += 1
            if len(batch) >= PARQUET_ROWS:
                flush(batch)
                batch = []
        if batch or not parts:
            flush(batch)
    finally:
        if writer is not None:
            writer.close()
    if len(parts) == 1:
        parts[0][0].replace(path)
        return count
    # Later batches inferred other types (e.g. a prediction that was whole numbers, then decimals): rewrite the
    # parts, one row group at a time, with the types every part fits.
    schema = _unified([s for _, s in parts])
    with pq.ParquetWriter(path, schema) as out:
        for part, _ in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                out.write_table(source.read_row_group(group).cast(schema))
            part.unlink()
    return count


def parquet_response(export: Plan) -> tuple[FileResponse, int]:
    """The Parquet file as a response (the file is unlinked once open: nothing is left behind) and its line count."""
    directory = Path(tempfile.mkdtemp(prefix="predictions-export-"))
    try:
        path = directory / "export.parquet"
        count = write_parquet(export, path)
        handle = path.open("rb")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    response = FileResponse(handle, as_attachment=True, filename=_filename(export.deployment, "parquet"),
                            content_type="application/vnd.apache.parquet")
    return response, count


def respond(deployment: Deployment, records, *, actor, fmt: str, params) -> StreamingHttpResponse | FileResponse:
    """The export of already-filtered `records` in `fmt`, audited (the page and the API both answer with this)."""
    export = plan(deployment, records)
    filters = used_filters(params)
    if fmt == "parquet":
        response, count = parquet_response(export)
        record_export(deployment, actor=actor, fmt=fmt, filters=filters, rows=count)
        return response
    record_export(deployment, actor=actor, fmt=fmt, filters=filters, rows=export.row_count)
    return csv_response(export)

