"""Read uploaded data files (CSV, TSV, Parquet, Excel) as Arrow record batches with one final schema.

Every problem with a file is a `DataFileError` whose message is shown to the user as it is. Notes that
are not errors (the encoding or separator we guessed, renamed columns) travel with the batches in the
schema metadata under `WARNINGS_KEY`; `profiling.profile_batches` turns them into profile warnings.

How CSV/TSV is read, and why it takes two passes: Arrow's streaming reader fixes each column's type from
the first block and fails when a later row disagrees (whole numbers, then "1.5" or "abc" at row 900,000).
Batches must carry their final types (the Parquet copy is written as they arrive), so a first pass parses
the file in chunks of about `batch_rows` rows with every non-text column typed, widening a column
(integer -> float -> text) when a chunk disagrees, and checks row lengths and UTF-8. Widening never
invalidates earlier chunks. Those typed columns wait in a spool (memory, then a temporary file); the second
pass parses only the text columns, in a background thread so that it overlaps with the consumer, and puts
each chunk back together. So every value is converted once; only splitting rows into values happens twice.
A file that fits in one chunk is parsed once.

Encodings: UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark are read as they
are. Anything else is read as Windows-1252 (bytes it leaves undefined as Latin-1) with a warning, which
is right for files saved by Excel on Western-European Windows and never fails.

Cells that look like spreadsheet formulas (`=cmd|' /C calc'!A0`) are plain text here: nothing is ever
evaluated. Excel files are read with `data_only=True`, i.e. the values Excel last calculated.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as paipc

MAX_COLUMNS = 2000
MAX_XLSX_UNCOMPRESSED_BYTES = 500 * 1024 * 1024
MAX_XLSX_RATIO = 100
MAX_XLSX_MEMBERS = 10_000

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

HEAD_BYTES = 1 << 20
MAX_HEADER_BYTES = 16 << 20
CHUNK_BYTES = 16 << 20
XLSX_SPOOL_MEMORY_BYTES = 64 << 20
CSV_SPOOL_MEMORY_BYTES = 16 << 20  # parsed columns kept in memory between the passes; beyond, a temporary file
CSV_CHECK_SHARE = 40  # percent of the job the CSV first pass reports
XLSX_READ_SHARE = 85

_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
}
_MAGIC = [
    (b"PAR1", "parquet", "a Parquet file"),
    (b"PK\x03\x04", "zip", "a zip archive (an Excel workbook is one)"),
    (b"PK\x05\x06", "zip", "a zip archive (an Excel workbook is one)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole", "an old-style Excel (.xls) or other Office file"),
    (b"\x1f\x8b", "binary", "gzip-compressed data"),
    (b"BZh", "binary", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "binary", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "binary", "a 7-Zip archive"),
    (b"Rar!", "binary", "a RAR archive"),
    (b"%PDF", "binary", "a PDF document"),
    (b"\x89PNG", "binary", "a PNG image"),
    (b"\xff\xd8\xff", "binary", "a JPEG image"),
    (b"GIF8", "binary", "a GIF image"),
    (b"SQLite format 3\x00", "binary", "an SQLite database"),
    (b"\x7fELF", "binary", "a program (ELF executable)"),
    (b"MZ", "binary", "a Windows program"),
    (b"ARROW1", "binary", "an Arrow IPC file"),
]


class DataFileError(ValueError):
    """A file the portal cannot read. The message says what is wrong and what to do, for the user."""


# --- Format detection -----------------------------------------------------------------------------------


def detect_format(filename: str, head: bytes) -> str:
    """Return "csv", "tsv", "parquet" or "xlsx" from the file name and its first bytes (a few KB is plenty).

    The extension says what the user meant and the first bytes say what the file is; they must agree.
    """
    ext = os.path.splitext(filename.lower())[1]
    if ext == ".xls":
        raise DataFileError(
            "Old-style Excel files (.xls) are not supported. Open the file in Excel, save it as .xlsx or CSV, "
            "and upload that."
        )
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        shown = f"“{ext}” files are" if ext else "Files without an extension are"
        raise DataFileError(f"{shown} not supported. Upload a .csv, .tsv, .parquet or .xlsx file.")
    if not head:
        raise DataFileError("The file is empty.")
    magic, description = _sniff_magic(head)
    if fmt == "parquet":
        if magic != "parquet":
            raise DataFileError(
                f"“{filename}” is not a Parquet file ({_described(magic, description)}). Check that you chose "
                "the right file, or give it the extension that matches its content."
            )
    elif fmt == "xlsx":
        if magic == "ole":
            raise DataFileError(
                f"“{filename}” is an old-style Excel file (.xls) renamed to .xlsx. Open it in Excel, save it as "
                ".xlsx or CSV, and upload that."
            )
        if magic != "zip":
            raise DataFileError(
                f"“{filename}” is not an Excel workbook ({_described(magic, description)}). Check that you "
                "chose the right file, or save the data from Excel as .xlsx."
            )
    elif magic is not None:
        hint = {
            "parquet": " Rename it to .parquet and upload it again.",
            "zip": " If it is an Excel workbook, rename it to .xlsx and upload it again.",
            "ole": " If it is an Excel file, save it as .xlsx or CSV and upload that.",
        }.get(magic, " Upload the data as CSV, TSV, Parquet or Excel (.xlsx).")
        raise DataFileError(f"“{filename}” is named like a text file but contains {description}, not text.{hint}")
    return fmt


def _described(magic: str | None, description: str) -> str:
    return f"it contains {description}" if magic else "its content is text or an unknown format"


def _sniff_magic(head: bytes) -> tuple[str | None, str]:
    for prefix, kind, description in _MAGIC:
        if head.startswith(prefix):
            return kind, description
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, ""
    sample = head[:8192]
    controls = sum(sample.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13))
    if b"\x00" in sample or controls > len(sample) * 0.1:
        return "binary", "binary data"
    return None, ""


# --- Entry point ----------------------------------------------------------------------------------------


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


# --- CSV / TSV ------------------------------------------------------------------------------------------


def _latin1_fallback(error: UnicodeDecodeError) -> tuple[str, int]:
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("portal-latin-1", _latin1_fallback)


@dataclass
class _CsvPlan:
    """Everything the two passes need to parse the file the same way."""

    names: list[str]
    delimiter: str
    encoding: str  # "utf-8", "utf-16" or "cp1252"
    skip_rows: int  # blank lines before the header, plus the header
    decimal_point: str = "."
    careful: bool = False  # values contain line breaks: cut chunks by quote parity, parse serially
    types: dict[str, pa.DataType] = field(default_factory=dict)  # checked columns; the rest are text
    chunk_bytes: int = CHUNK_BYTES  # about batch_rows rows, so that most chunks make one batch
    warnings: list[dict] = field(default_factory=list)

    def read_options(self, first: bool, *, serial: bool = False) -> pacsv.ReadOptions:
        # Blocks of 1-2 MB parse fastest (they stay in cache). The first pass parses with Arrow's threads; the
        # second parses on one thread while the consumer works on the previous chunk on another.
        return pacsv.ReadOptions(
            column_names=self.names,
            skip_rows=self.skip_rows if first else 0,
            block_size=(2 << 20) if serial else (1 << 20),
            use_threads=not serial,
        )

    def parse_options(self, *, serial: bool = False) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=self.careful or serial)

    def convert_options(self, types: dict[str, pa.DataType], include: list[str] | None = None) -> pacsv.ConvertOptions:
        return pacsv.ConvertOptions(
            column_types=types,
            include_columns=include or [],
            decimal_point=self.decimal_point,
            strings_can_be_null=True,
        )

    def parse(
        self, chunk: pa.Buffer, first: bool, types: dict, include: list[str] | None = None, *, serial: bool = False
    ) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(chunk),
            read_options=self.read_options(first, serial=serial),
            parse_options=self.parse_options(),
            convert_options=self.convert_options(types, include),
        )


class _Restart(Exception):
    """The first pass must start again (a different encoding, or values with line breaks)."""


class _RaggedRows(Exception):
    """Arrow could not split a chunk into rows of the header's length (even allowing line breaks in values)."""


def _iter_delimited(stream: BinaryIO, fmt: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    with _seekable_copy(stream) as (src, start), _Spool() as spool:
        plan = _plan_csv(src, start, fmt, batch_rows)
        for _attempt in range(3):  # at most: another encoding, then careful row cutting
            try:
                rows, whole = _check_csv(src, start, plan, spool)
                break
            except _Restart:
                spool.clear()
        else:
            raise DataFileError("The file could not be read as CSV. Check that it is a CSV file and upload it again.")
        fields = [pa.field(n, plan.types.get(n, pa.string())) for n in plan.names]
        fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in fields]
        schema = _final_schema(fields, plan.warnings, rows, CSV_CHECK_SHARE)
        if rows == 0:
            yield _empty_batch(schema)
        elif whole is not None:  # the file was one chunk, already parsed with its final types
            for batch in whole.cast(schema).to_batches(max_chunksize=batch_rows):
                if batch.num_rows:
                    yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        else:
            yield from _read_csv_in_background(src, start, plan, schema, batch_rows, spool)


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


def _source_size(src: BinaryIO, start: int) -> int | None:
    try:
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - start
    except (OSError, ValueError):
        return None


def _plan_csv(src: BinaryIO, start: int, fmt: str, batch_rows: int = 65_536) -> _CsvPlan:
    """Read the head: encoding, separator, header and a first guess of the column types."""
    src.seek(start)
    head = src.read(HEAD_BYTES)
    if not head.strip(b" \t\r\n\x00\xef\xbb\xbf\xff\xfe"):
        raise DataFileError("The file is empty.")
    magic, description = _sniff_magic(head)
    if magic is not None:
        raise DataFileError(
            f"The file contains {description}, not text. Upload the data as CSV, TSV, Parquet or Excel (.xlsx)."
        )
    warnings: list[dict] = []
    encoding = _pick_encoding(head, warnings)
    at_end = len(head) < HEAD_BYTES
    while b"\n" not in head and not at_end and len(head) < MAX_HEADER_BYTES:
        more = src.read(HEAD_BYTES)
        at_end = len(more) < HEAD_BYTES
        head += more
    text = _decode_head(head, encoding)
    complete = text if at_end else text[: text.rfind("\n") + 1]
    if not complete:
        raise DataFileError("The first line (the header) is longer than 16 MB. Check that the file is a CSV file.")
    delimiter, decimal_point = _sniff_dialect(complete, fmt, warnings)

    reader = csv.reader(io.StringIO(complete, newline=""), delimiter=delimiter)
    leading_blank = 0  # lines before the header
    header: list[str] = []
    with contextlib.suppress(csv.Error):
        for row in reader:
            if any(cell.strip() for cell in row):
                header = row
                break
            leading_blank = reader.line_num
    if not header:
        raise DataFileError("The file is empty.")
    names = _check_names(header, warnings)
    if len(names) == 1 and any(c in names[0] for c in ":^~ "):
        warnings.append(
            _warning(
                None,
                "delimiter",
                "The file has a single column. If it should have more, save it with commas, semicolons or tabs "
                "between the values and upload it again.",
            )
        )
    plan = _CsvPlan(
        names=names,
        delimiter=delimiter,
        encoding=encoding,
        skip_rows=leading_blank + 1,
        decimal_point=decimal_point,
        warnings=warnings,
    )
    plan.types, head_rows = _guess_types(plan, complete)
    if head_rows:
        per_row = len(complete.encode("utf-8")) / head_rows
        plan.chunk_bytes = int(min(max(batch_rows * per_row * 0.98, min(1 << 20, CHUNK_BYTES)), 4 * CHUNK_BYTES))
    else:
        plan.chunk_bytes = CHUNK_BYTES
    return plan


def _pick_encoding(head: bytes, warnings: list[dict]) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        warnings.append(_encoding_warning())
        return "cp1252"
    return "utf-8"


def _encoding_warning() -> dict:
    return _warning(
        None,
        "encoding",
        "The file is not UTF-8 encoded; it was read as Windows-1252 (Western European). If accented letters look "
        "wrong, save the file as “CSV UTF-8” and upload it again.",
    )


def _decode_head(head: bytes, encoding: str) -> str:
    if encoding == "utf-8":
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    if encoding == "utf-16":
        return codecs.getincrementaldecoder("utf-16")().decode(head, final=False)
    return head.decode("cp1252", errors="portal-latin-1")


_DECIMAL_COMMA = re.compile(r"(?:^|;)\s*-?\d+,\d+\s*(?:;|$)", re.MULTILINE)
_SEPARATOR_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "vertical bars (|)"}


def _sniff_dialect(text: str, fmt: str, warnings: list[dict]) -> tuple[str, str]:
    """Pick the separator: the candidate that splits the head's rows into the most, equally many, fields."""
    default = "\t" if fmt == "tsv" else ","
    candidates = [default] + [c for c in _SEPARATOR_NAMES if c != default]
    sample = text[:65536]
    if len(text) > len(sample):
        sample = sample[: sample.rfind("\n") + 1] or sample
    best, best_fields = None, 1
    for candidate in candidates:
        try:
            counts = {len(row) for row in csv.reader(io.StringIO(sample, newline=""), delimiter=candidate) if row}
        except csv.Error:
            continue
        if len(counts) == 1 and (fields := counts.pop()) > best_fields:
            best, best_fields = candidate, fields
    if best is None:
        # Rows disagree for every separator (a ragged file): go by the header line.
        first = sample.lstrip("\r\n").split("\n", 1)[0]
        best = max(candidates, key=lambda c: (first.count(c), c == default))
        if first.count(best) == 0:
            best = default
    if best != default:
        warnings.append(
            _warning(
                None,
                "delimiter",
                f"Values are separated by {_SEPARATOR_NAMES[best]}, not {_SEPARATOR_NAMES[default]}; "
                "the file was read accordingly.",
            )
        )
    decimal_point = "."
    if best == ";" and _DECIMAL_COMMA.search(sample):
        decimal_point = ","
        warnings.append(_warning(None, "decimal_comma", "Numbers use a decimal comma (1,5); read accordingly."))
    return best, decimal_point


def _guess_types(plan: _CsvPlan, complete_head: str) -> tuple[dict[str, pa.DataType], int]:
    """Arrow's inference on the head. Text columns are final; the others are checked by the first pass."""
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(complete_head.encode("utf-8"))),
            read_options=plan.read_options(True),
            parse_options=plan.parse_options(serial=True),
            convert_options=plan.convert_options({}),
        )
    except pa.ArrowInvalid:
        return {name: pa.null() for name in plan.names}, 0  # the first pass finds out (or names the bad line)
    types = {f.name: _normalise(f.type) for f in table.schema if not pa.types.is_string(_normalise(f.type))}
    return types, table.num_rows


def _chunks(
    src: BinaryIO, start: int, plan: _CsvPlan, size: int | None = None
) -> Iterator[tuple[pa.Buffer, bool, bool, int]]:
    """Cut the text (as UTF-8) into chunks ending at a row boundary: (chunk, is_first, is_last, bytes_read)."""
    size = size or CHUNK_BYTES
    src.seek(start)
    decoder = None
    if plan.encoding == "utf-16":
        decoder = codecs.getincrementaldecoder("utf-16")()
    elif plan.encoding == "cp1252":
        decoder = codecs.getincrementaldecoder("cp1252")(errors="portal-latin-1")
    left = b""
    first = True
    done = 0
    # One buffer, reused: each chunk is parsed (and copied by Arrow) before the next is read. Fresh 16 MB
    # buffers would cost a page fault per 4 kB every time.
    buf = bytearray(size)
    while True:
        if len(buf) < len(left) + size:
            buf = bytearray(len(left) + size)  # a row longer than a chunk is being read
        view = memoryview(buf)
        view[: len(left)] = left
        n = _read_into(src, view[len(left) : len(left) + size])
        done += n
        last = n < size
        data = view[: len(left) + n]
        if decoder is not None:
            data = memoryview(left + decoder.decode(bytes(view[len(left) : len(left) + n]), final=last).encode())
        cut = len(data) if last else _row_boundary(data, plan.careful)
        if cut > 0:
            yield pa.py_buffer(data)[:cut], first, last, done
            first = False
        left = bytes(data[cut:])
        del view, data
        if last:
            return


def _read_into(src: BinaryIO, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        n = src.readinto(view[filled:])
        if not n:
            break
        filled += n
    return filled


def _row_boundary(data: memoryview, careful: bool) -> int:
    """Offset just after the last line break that ends a row (outside quotes when values have line breaks)."""
    tail = bytes(data[-(1 << 16) :])  # rows are usually much shorter than 64 kB
    nl = tail.rfind(b"\n")
    if nl >= 0 and not careful:
        return len(data) - len(tail) + nl + 1
    whole = bytes(data)
    if not careful:
        return whole.rfind(b"\n") + 1
    quotes = int(np.count_nonzero(np.frombuffer(data, np.uint8) == ord('"')))
    end = len(whole)
    while True:
        nl = whole.rfind(b"\n", 0, end)
        if nl < 0:
            return 0
        if (quotes - whole.count(b'"', nl)) % 2 == 0:
            return nl + 1
        end = nl


def _require_utf8(chunk: pa.Buffer) -> None:
    offsets = pa.py_buffer(np.array([0, chunk.size], np.int32).tobytes())
    pa.Array.from_buffers(pa.binary(), 1, [None, offsets, chunk]).cast(pa.string())


_CONVERSION = re.compile(r"In CSV column #(\d+): CSV conversion error to [^:]+: invalid value")


def _check_csv(src: BinaryIO, start: int, plan: _CsvPlan, spool: _Spool) -> tuple[int, pa.Table | None]:
    """First pass: settle the checked columns' types, check row lengths and encoding.

    The checked (non-text) columns of each chunk go to the spool, parsed: the second pass only parses the text.
    Returns the row count and, when the file was a single chunk, that chunk parsed with all its columns.
    """
    size = _source_size(src, start)
    rows = 0
    for index, (chunk, first, last, done) in enumerate(_chunks(src, start, plan, plan.chunk_bytes)):
        if plan.encoding == "utf-8":
            try:
                _require_utf8(chunk)
            except pa.ArrowInvalid:
                plan.encoding = "cp1252"
                plan.warnings.append(_encoding_warning())
                raise _Restart() from None
        whole = first and last
        try:
            table = _check_chunk(chunk, first, plan, whole=whole)
        except _RaggedRows as exc:
            if not plan.careful:
                plan.careful = True  # maybe values with line breaks confused the fast row cutting
                raise _Restart() from None
            raise _ragged_error(str(exc), src, start, plan, index) from None
        rows += table.num_rows
        if size:
            _report(CSV_CHECK_SHARE * min(done, size) / size, f"Checking the file ({_mb(done)} of {_mb(size)})")
        if whole:
            return rows, table
        spool.add(table.select([n for n in table.column_names if n in plan.types]), table.num_rows)
        del table
        _release_memory()
    return rows, None


def _release_memory() -> None:
    """Hand memory freed by Arrow back to the system: its allocator otherwise keeps every chunk's worth."""
    pa.default_memory_pool().release_unused()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 10e6 else f"{n / 1e6:,.1f} MB"


def _check_chunk(chunk: pa.Buffer, first: bool, plan: _CsvPlan, *, whole: bool) -> pa.Table:
    for _ in range(3 * len(plan.names) + 1):  # each retry widens a column; there are at most 3 steps each
        checked = [n for n in plan.names if n in plan.types]
        types = {n: t for n, t in plan.types.items() if not pa.types.is_null(t)}
        if whole:
            types.update({n: pa.string() for n in plan.names if n not in plan.types})
        include = plan.names if whole else (checked or plan.names[:1])
        try:
            table = plan.parse(chunk, first, types, include)
        except pa.ArrowInvalid as exc:
            message = str(exc)
            if match := _CONVERSION.search(message):
                _widen(plan, plan.names[int(match.group(1))], chunk, first)
                continue
            if "CSV parse error" in message:
                raise _RaggedRows(message) from None
            raise
        for name in checked:
            if pa.types.is_null(plan.types[name]):  # not seen before: take what this chunk holds
                plan.types[name] = _normalise(table.column(name).type)
        for name in [n for n, t in plan.types.items() if pa.types.is_string(t)]:
            del plan.types[name]  # text: nothing left to check
        return table
    raise DataFileError("The column types of this file could not be worked out. Please report this file to us.")


def _widen(plan: _CsvPlan, name: str, chunk: pa.Buffer, first: bool) -> None:
    """A value did not fit the column's type: join with what Arrow infers for the column in this chunk."""
    inferred = plan.parse(chunk, first, {}, [name]).column(name).type
    joined = _join(plan.types[name], inferred)
    plan.types[name] = pa.string() if joined == plan.types[name] else joined


def _ragged_error(message: str, src: BinaryIO, start: int, plan: _CsvPlan, index: int) -> DataFileError:
    """Name the first row whose length differs from the header's, by its line number in a text editor."""
    lines_before = 0
    for i, (chunk, first, _, _) in enumerate(_chunks(src, start, plan, plan.chunk_bytes)):
        if i < index:
            lines_before += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == 10))
            continue
        text = chunk.to_pybytes().decode("utf-8", errors="replace")
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=plan.delimiter)
        skip = plan.skip_rows if first else 0
        line_before = 0
        old_limit = csv.field_size_limit(2**31 - 1)
        try:
            for row in reader:
                if reader.line_num <= skip:
                    line_before = reader.line_num
                    continue
                if row and len(row) != len(plan.names):
                    shown = plan.delimiter.join(row)
                    shown = shown if len(shown) <= 80 else shown[:77] + "…"
                    sep = _separator(plan.delimiter)
                    return DataFileError(
                        f"Line {lines_before + line_before + 1:,} has {len(row)} values but the header has "
                        f"{len(plan.names)} columns: “{shown}”. Check that line for a missing or extra separator "
                        f"({sep}), or for a value that contains {sep} but is not in double quotes."
                    )
                line_before = reader.line_num
        except csv.Error as exc:
            line = lines_before + reader.line_num
            return DataFileError(
                f"The file is not valid CSV near line {line:,} ({exc}). Fix that line and upload it again."
            )
        finally:
            csv.field_size_limit(old_limit)
        break
    detail = message.replace("CSV parse error: ", "")
    return DataFileError(f"The file could not be read as CSV ({detail}). Fix that row and upload the file again.")


def _separator(delimiter: str) -> str:
    return {",": "a comma", ";": "a semicolon", "\t": "a tab", "|": "a vertical bar"}.get(delimiter, repr(delimiter))


def _read_csv_in_background(
    src: BinaryIO, start: int, plan: _CsvPlan, schema: pa.Schema, batch_rows: int, spool: _Spool
) -> Iterator[pa.RecordBatch]:
    """Second pass: parse the text columns (in a thread, overlapping with the consumer) beside the spooled rest."""
    text = [f.name for f in schema if pa.types.is_string(f.type)]
    q: queue.Queue = queue.Queue(maxsize=1)  # the next batch is parsed while the consumer works on this one
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def chunks() -> Iterator[tuple[pa.Table | None, int, pa.Table | None]]:
        if not text:
            for typed, rows in spool:
                yield typed, rows, None
            return
        parsed = _chunks(src, start, plan, plan.chunk_bytes)
        for (typed, rows), (chunk, first, _, _) in zip(spool, parsed, strict=True):
            yield typed, rows, plan.parse(chunk, first, dict.fromkeys(text, pa.string()), text, serial=False)

    def produce() -> None:
        try:
            for typed, rows, parsed in chunks():
                columns = []
                for f in schema:
                    source = parsed if pa.types.is_string(f.type) else typed
                    if source is None or source.num_rows != rows:
                        raise RuntimeError("the two passes over the CSV file disagree on its rows")
                    column = source.column(f.name).combine_chunks()
                    columns.append(column if column.type == f.type else column.cast(f.type))
                whole = pa.RecordBatch.from_arrays(columns, schema=schema)
                del typed, parsed, columns
                _release_memory()
                for offset in range(0, rows, batch_rows):
                    if not put(whole.slice(offset, batch_rows)):
                        return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=produce, name="portal-csv-reader", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                q.get_nowait()
        worker.join()


class _Spool:
    """Parsed tables kept between the two passes: in memory up to a limit, then in a temporary file."""

    def __init__(self) -> None:
        self.memory_bytes = CSV_SPOOL_MEMORY_BYTES
        self.items: list[tuple[pa.Table | tuple[int, int] | None, int]] = []
        self.held = 0
        self.file = None

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc) -> None:
        self.clear()

    def clear(self) -> None:
        self.items, self.held = [], 0
        if self.file is not None:
            self.file.close()
            self.file = None

    def add(self, table: pa.Table, rows: int) -> None:
        if not table.num_columns:
            self.items.append((None, rows))
            return
        table = table.combine_chunks()
        if self.file is None and self.held + table.nbytes <= self.memory_bytes:
            self.items.append((table, rows))
            self.held += table.nbytes
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="portal-csv-")  # noqa: SIM115 (closed by clear())
            self.items = [(self._write(kept) if isinstance(kept, pa.Table) else kept, n) for kept, n in self.items]
            self.held = 0
        self.items.append((self._write(table), rows))

    def _write(self, table: pa.Table) -> tuple[int, int]:
        offset = self.file.seek(0, os.SEEK_END)
        with paipc.new_stream(self.file, table.schema) as writer:
            writer.write_table(table)
        return offset, self.file.tell() - offset

    def __iter__(self) -> Iterator[tuple[pa.Table | None, int]]:
        for item, rows in self.items:
            if isinstance(item, tuple):
                self.file.seek(item[0])
                item = paipc.open_stream(pa.py_buffer(self.file.read(item[1]))).read_all()
            yield item, rows


# --- Parquet --------------------------------------------------------------------------------------------


def _iter_parquet(stream: BinaryIO, batch_rows: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(stream)
        source = pf.schema_arrow
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(
            f"This Parquet file can't be read ({exc}). Check that it is complete and upload it again."
        ) from None
    warnings: list[dict] = []
    if not len(source):
        raise DataFileError("The Parquet file has no columns.")
    names = _check_names(source.names, warnings)
    fields = []
    for name, f in zip(names, source, strict=True):
        target = _normalise(f.type)
        if pa.types.is_null(target):
            target = pa.string()
        if _is_nested(f.type):
            warnings.append(
                _warning(name, "nested", f"`{name}` holds nested values ({f.type}); they are shown as JSON text.")
            )
        fields.append(pa.field(name, target))
    schema = _final_schema(fields, warnings, pf.metadata.num_rows, 0)
    produced = False
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            columns = [_to_reader_type(batch.column(i), schema.field(i)) for i in range(batch.num_columns)]
            produced = True
            yield pa.RecordBatch.from_arrays(columns, schema=schema)
    except (pa.ArrowException, OSError) as exc:
        raise DataFileError(f"This Parquet file is damaged ({exc}). Export it again and upload the new file.") from None
    if not produced:
        yield _empty_batch(schema)


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_nested(t) or pa.types.is_union(t)


def _to_reader_type(arr: pa.Array, target: pa.Field) -> pa.Array:
    t = arr.type
    if t == target.type:
        return arr
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        return _to_reader_type(arr, target)
    if _is_nested(t):
        return pa.array(
            [None if v is None else json.dumps(v, default=str, ensure_ascii=False) for v in arr.to_pylist()],
            pa.string(),
        )
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        try:
            return arr.cast(pa.binary()).cast(pa.string())
        except pa.ArrowInvalid:
            return pa.array([None if v is None else v.hex() for v in arr.to_pylist()], pa.string())
    try:
        return pc.cast(arr, target.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pa.types.is_integer(t):
            raise DataFileError(
                f"`{target.name}` has whole numbers too large for the portal (over 9,223,372,036,854,775,807). Store "
                "them as text or decimals and upload the file again."
            ) from None
        return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


# --- Excel ----------------------------------------------------------------------------------------------


def _check_xlsx_zip(stream: BinaryIO) -> None:
    """Refuse zip bombs by the sizes the archive declares, before any XML is unpacked."""
    try:
        with zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataFileError(
            f"This .xlsx file is damaged or not an Excel workbook ({exc}). Save it again from Excel."
        ) from None
    if not any(m.filename == "xl/workbook.xml" for m in members):
        raise DataFileError("This file is a zip archive but not an Excel workbook. Save the data from Excel as .xlsx.")
    unpacked = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members)
    ratio = unpacked / max(packed, 1)
    if (
        len(members) > MAX_XLSX_MEMBERS
        or unpacked > MAX_XLSX_UNCOMPRESSED_BYTES
        or (unpacked > (1 << 20) and ratio > MAX_XLSX_RATIO)
    ):
        raise DataFileError(
            f"This .xlsx file would unpack to {unpacked / 1e6:,.0f} MB ({ratio:,.0f} times its size, in "
            f"{len(members):,} parts), more than the portal accepts ({MAX_XLSX_UNCOMPRESSED_BYTES // 2**20} MB, "
            f"{MAX_XLSX_RATIO} times). It may be a “zip bomb”. Save the data as CSV or Parquet and upload that instead."
        )


def _iter_xlsx(stream: BinaryIO, batch_rows: int) -> Iterator[pa.RecordBatch]:
    start = stream.tell()
    _check_xlsx_zip(stream)
    stream.seek(start)
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DataFileError(
            f"This .xlsx file can't be opened ({exc}). Save it again from Excel and upload it."
        ) from None
    try:
        if not workbook.worksheets:
            raise DataFileError("The workbook has no sheets.")
        sheet = workbook.worksheets[0]
        with _XlsxSpool() as spool:
            names, warnings = _read_sheet(sheet, spool, batch_rows)
            fields = [pa.field(n, spool.types.get(i, pa.string())) for i, n in enumerate(names)]
            fields = [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in fields]
            schema = _final_schema(fields, warnings, spool.rows, XLSX_READ_SHARE)
            produced = False
            for batch in spool.batches():
                columns = [_from_text(batch.column(i), f.type) for i, f in enumerate(schema)]
                produced = True
                yield pa.RecordBatch.from_arrays(columns, schema=schema)
            if not produced:
                yield _empty_batch(schema)
    finally:
        workbook.close()


def _read_sheet(sheet, spool: _XlsxSpool, batch_rows: int) -> tuple[list[str], list[dict]]:
    warnings: list[dict] = []
    rows = sheet.iter_rows(values_only=True)
    header = None
    for row in rows:
        if any(v is not None and str(v).strip() for v in row):
            header = list(row)
            break
    if header is None:
        raise DataFileError("The file is empty: the first sheet has no data.")
    while header and (header[-1] is None or not str(header[-1]).strip()):
        header.pop()
    names = _check_names(header, warnings)
    width = len(names)
    total = sheet.max_row or 0
    buffer: list[tuple] = []
    ignored = 0
    for row in rows:
        if len(row) > width and any(v is not None for v in row[width:]):
            ignored += 1
        if not any(v is not None for v in row[:width]):
            continue
        buffer.append(row[:width] if len(row) >= width else tuple(row) + (None,) * (width - len(row)))
        if len(buffer) >= batch_rows:
            spool.add(buffer, width)
            buffer = []
            # Without a size in the sheet's header, the share of rows read can only be guessed: approach, never reach.
            share = min(spool.rows, total) / total if total else spool.rows / (spool.rows + 100_000)
            _report(XLSX_READ_SHARE * share, f"Reading the workbook ({spool.rows:,} rows so far)")
    if buffer:
        spool.add(buffer, width)
    if ignored:
        warnings.append(
            _warning(
                None,
                "ignored_cells",
                f"{ignored:,} row(s) had values to the right of the last named column; they were ignored.",
            )
        )
    return names, warnings


def _cell_text(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date | time):
        return v.isoformat()
    return str(v)


def _xlsx_column(values: list) -> tuple[pa.Array, pa.DataType]:
    """The column's values as text (for the spool) and the type they fit, decided by Arrow where it can."""
    try:
        arr = pa.array(values)
        if pa.types.is_date32(arr.type) and any(isinstance(v, datetime) for v in values):
            arr = pa.array([datetime.combine(v, time()) if type(v) is date else v for v in values])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([_cell_text(v) for v in values], pa.string()), pa.string()
    t = _normalise(arr.type)
    if pa.types.is_string(t) and not pa.types.is_string(arr.type):
        return pa.array([_cell_text(v) for v in values], pa.string()), t
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.string()), t
    return arr.cast(pa.string()), t


def _from_text(arr: pa.Array, target: pa.DataType) -> pa.Array:
    return arr if pa.types.is_string(target) else pc.cast(arr, target)


class _XlsxSpool:
    """Rows read from a workbook, kept as text until every column's type is known (memory, then disk)."""

    def __init__(self) -> None:
        self.types: dict[int, pa.DataType] = {}
        self.rows = 0
        self._memory: list[pa.RecordBatch] = []
        self._bytes = 0
        self._file = None
        self._writer = None
        self._schema: pa.Schema | None = None

    def __enter__(self) -> _XlsxSpool:
        return self

    def __exit__(self, *exc) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._file is not None:
            self._file.close()

    def add(self, rows: list[tuple], width: int) -> None:
        columns = []
        for i, values in enumerate(zip(*rows, strict=True)):
            arr, t = _xlsx_column(list(values))
            self.types[i] = _join(self.types.get(i, pa.null()), t)
            columns.append(arr)
        if self._schema is None:
            self._schema = pa.schema([(f"c{i}", pa.string()) for i in range(width)])
        batch = pa.RecordBatch.from_arrays(columns, schema=self._schema)
        self.rows += batch.num_rows
        if self._writer is None and self._bytes + batch.nbytes <= XLSX_SPOOL_MEMORY_BYTES:
            self._memory.append(batch)
            self._bytes += batch.nbytes
            return
        if self._writer is None:
            self._file = tempfile.TemporaryFile(prefix="portal-xlsx-")  # noqa: SIM115 (closed by __exit__)
            self._writer = paipc.new_file(self._file, self._schema)
            for kept in self._memory:
                self._writer.write_batch(kept)
            self._memory = []
        self._writer.write_batch(batch)

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self._writer is None:
            yield from self._memory
            return
        self._writer.close()
        self._writer = None
        self._file.seek(0)
        reader = paipc.open_file(self._file)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
