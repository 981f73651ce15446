"""The entry point: a data file's rows as Arrow record batches with one final schema, whatever its format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from .base import _seekable_copy
from .csv_read import _iter_delimited
from .excel import _iter_xlsx
from .parquet import _iter_parquet


def iter_batches(stream: BinaryIO, fmt: str, *, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Yield the file's rows as record batches of at most `batch_rows` rows, all with one final schema.

    Column types are int64, float64, bool, timestamp or string. There is always at least one batch (with
    zero rows for a file with only a header), so the schema is known. A stream that cannot seek is first
    copied to a temporary file (both CSV passes, Parquet and Excel need to re-read).
    The schema metadata carries reader warnings (`WARNINGS_KEY`) and, when known, the row count. Problems
    with the file raise DataFileError, on the first `next()` for most of them.
    """
    if fmt in ("csv", "tsv"):
        return _iter_delimited(stream, fmt, batch_rows)
    if fmt in ("parquet", "xlsx"):
        return _iter_seekable(stream, fmt, batch_rows)
    raise ValueError(f"unknown format {fmt!r}")


def _iter_seekable(stream: BinaryIO, fmt: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    with _seekable_copy(stream) as (src, _):
        yield from (_iter_parquet if fmt == "parquet" else _iter_xlsx)(src, batch_rows)
