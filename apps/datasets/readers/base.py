"""What every reader shares: the user's error, the schema metadata, progress reporting, header names, types."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import BinaryIO

import pyarrow as pa

MAX_COLUMNS = 2000

#: Schema metadata written on every batch: JSON list of {"column", "kind", "message"}.
WARNINGS_KEY = b"portal.warnings"
#: Schema metadata: the number of data rows, when the reader knows it before the first batch.
ROWS_KEY = b"portal.rows"
#: Schema metadata: the share of the job (percent) the reader has already reported before the first batch.
PROGRESS_FROM_KEY = b"portal.progress_from"

#: While `profile_batches` consumes `iter_batches`, the reader reports the progress of its first pass
#: here (percent of the whole job, message). Generators run in their consumer's context, so setting it
#: around the loop is enough; other callers may set it too.
progress_hook: ContextVar[Callable[[int, str], None] | None] = ContextVar("portal_read_progress", default=None)


class DataFileError(ValueError):
    """A file the portal cannot read. The message says what is wrong and what to do, for the user."""


def _warning(column: str | None, kind: str, message: str) -> dict:
    return {"column": column, "kind": kind, "message": message}


def _final_schema(fields: list[pa.Field], warnings: list[dict], rows: int | None, progress_from: int) -> pa.Schema:
    meta = {WARNINGS_KEY: json.dumps(warnings).encode(), PROGRESS_FROM_KEY: str(progress_from).encode()}
    if rows is not None:
        meta[ROWS_KEY] = str(rows).encode()
    return pa.schema(fields, metadata=meta)


def _report(percent: float, message: str) -> None:
    hook = progress_hook.get()
    if hook is not None:
        hook(int(percent), message)


def _check_names(raw: list, warnings: list[dict]) -> list[str]:
    """Clean header names: strip, name blank ones, refuse too many columns or duplicates."""
    if len(raw) > MAX_COLUMNS:
        raise DataFileError(
            f"The file has {len(raw):,} columns; the portal reads at most {MAX_COLUMNS:,}. Remove the columns "
            "you don't need (or split the file) and upload it again."
        )
    names, blank = [], []
    for i, value in enumerate(raw, start=1):
        name = "" if value is None else str(value).strip()
        if not name:
            name = f"column_{i}"
            blank.append(name)
        names.append(name)
    duplicated = {name: n for name, n in Counter(names).items() if n > 1}
    if duplicated:
        listed = ", ".join(f"`{name}` appears {n} times" for name, n in list(duplicated.items())[:10])
        raise DataFileError(f"Column names must be unique, but {listed}. Rename the columns and upload the file again.")
    if blank:
        warnings.append(
            _warning(
                None, "renamed", f"{len(blank)} column(s) had no name in the header and were named {_list(blank)}."
            )
        )
    return names


def _list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.nulls(0, f.type) for f in schema], schema=schema)


@contextlib.contextmanager
def _seekable_copy(stream: BinaryIO) -> Iterator[tuple[BinaryIO, int]]:
    """The stream itself when it can seek, else a temporary copy on disk (both passes and restarts re-read)."""
    seekable = False
    with contextlib.suppress(AttributeError, OSError, ValueError):
        seekable = stream.seekable()
    if seekable:
        yield stream, stream.tell()
        return
    with tempfile.TemporaryFile(prefix="portal-upload-") as tmp:
        shutil.copyfileobj(stream, tmp, 1 << 20)
        tmp.seek(0)
        yield tmp, 0


# --- Arrow types ----------------------------------------------------------------------------------------


def _normalise(t: pa.DataType) -> pa.DataType:
    """The reader's type for an inferred/stored type: int64, float64, bool, timestamp, string (or null)."""
    if pa.types.is_null(t) or pa.types.is_boolean(t) or pa.types.is_string(t):
        return t
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_timestamp(t):
        return t
    if pa.types.is_date32(t):
        return pa.timestamp("s")
    if pa.types.is_date64(t):
        return pa.timestamp("ms")
    return pa.string()


def _join(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The narrowest type that holds values of both types (integer+float -> float, clash -> text)."""
    a, b = _normalise(a), _normalise(b)
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.int64(), pa.float64())
    if a in numeric and b in numeric:
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b) and a.tz == b.tz:
        units = ["s", "ms", "us", "ns"]
        return pa.timestamp(max(a.unit, b.unit, key=units.index), tz=a.tz)
    return pa.string()
