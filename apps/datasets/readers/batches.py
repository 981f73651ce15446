"""The entry point: a data file's rows as Arrow record batches with one final schema, whatever its format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

import pyarrow as pa

from .base import _seekable_copy
from .csv_read import StartOver, _iter_delimited
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


T = TypeVar("T")


def read_batches(
    stream: BinaryIO, fmt: str, consume: Callable[[Iterator[pa.RecordBatch]], T], *, batch_rows: int = 65_536
) -> T:
    """`consume(batches)` over the file's batches (as from `iter_batches`), reading a CSV/TSV file only once
    when its column types hold: `consume` may be called a second time, from the start.

    The first attempt parses each chunk of a CSV file once and hands it out straight away, typed as the first
    chunk says. If a later row does not fit those types (whole numbers, then "1.5" at row 900,000), that
    attempt raises and `consume` is called again with the two-pass reader, whose first batch already has the
    final types. So `consume` must undo (or overwrite) whatever an attempt that raised has done.
    """
    if fmt not in ("csv", "tsv"):
        return consume(iter_batches(stream, fmt, batch_rows=batch_rows))
    with _seekable_copy(stream) as (src, start):
        try:
            return consume(_iter_delimited(src, fmt, batch_rows, single_pass=True))
        except StartOver:
            src.seek(start)
            return consume(_iter_delimited(src, fmt, batch_rows))
