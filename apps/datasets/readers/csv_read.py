"""Read CSV/TSV: one optimistic pass when the consumer can start over, else two (check and type, then text)."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.ipc as paipc

from ..pii import redact_text
from .base import DataFileError, _empty_batch, _final_schema, _join, _normalise, _report, _seekable_copy
from .csv_plan import CHUNK_BYTES, _CsvPlan, _encoding_warning, _plan_csv

CSV_SPOOL_MEMORY_BYTES = 16 << 20  # parsed columns kept in memory between the passes; beyond, a temporary file
CSV_CHECK_SHARE = 40  # percent of the job the CSV first pass reports
MAX_LINE_BYTES = 8 << 20  # a row carried over this long between chunks is refused (memory grows with it)


class _Restart(Exception):
    """The first pass must start again (a different encoding, or values with line breaks)."""


class _RaggedRows(Exception):
    """Arrow could not split a chunk into rows of the header's length (even allowing line breaks in values)."""


class StartOver(Exception):
    """The single pass met a row that does not fit the batches it already handed out: read the file again."""


def _iter_delimited(
    stream: BinaryIO, fmt: str, batch_rows: int, *, single_pass: bool = False
) -> Iterator[pa.RecordBatch]:
    with _seekable_copy(stream) as (src, start):
        plan = _plan_csv(src, start, fmt, batch_rows)
        if single_pass:
            yield from _single_pass(src, start, plan, batch_rows)
        else:
            yield from _two_passes(src, start, plan, batch_rows)


def _two_passes(src: BinaryIO, start: int, plan: _CsvPlan, batch_rows: int) -> Iterator[pa.RecordBatch]:
    with _Spool() as spool:
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


def _source_size(src: BinaryIO, start: int) -> int | None:
    try:
        here = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(here)
        return end - start
    except (OSError, ValueError):
        return None


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
        if last and len(data) and data[-1] != 10:
            # The last line has no line break: Arrow refuses a header-only file ("a,b,c") without one.
            data = memoryview(bytes(data) + b"\n")
        cut = len(data) if last else _row_boundary(data, plan.careful)
        if len(data) - cut >= MAX_LINE_BYTES:
            # Memory grows with the longest row: refuse a giant cell, or a quote never closed, before it costs GBs.
            raise DataFileError(
                f"The file has a row longer than {MAX_LINE_BYTES >> 20} MB. "
                "Check the file for a value with a double quote (\") that is never closed, or remove the huge "
                "value, and upload it again."
            )
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
                    # Quoted to help fix the file, but the error is shown to viewers too: no personal data in it.
                    shown = redact_text(plan.delimiter.join(row))
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


def _single_pass(src: BinaryIO, start: int, plan: _CsvPlan, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Parse every column of each chunk once, with the types the first chunk settles, and hand it out at once.

    Whatever the first chunk cannot settle (the encoding, row lengths) goes to the two passes, since nothing
    was handed out yet. After that, a chunk that does not fit (a value of another type, bytes that are not
    UTF-8, a ragged row) raises StartOver: the caller starts again with the two passes.
    """
    chunks = _chunks(src, start, plan, plan.chunk_bytes)
    try:
        chunk, first, last, _ = next(chunks)
        if plan.encoding == "utf-8":
            _require_utf8(chunk)
        table = _check_chunk(chunk, first, plan, whole=True)
    except (StopIteration, pa.ArrowInvalid, _RaggedRows):
        chunks.close()
        yield from _two_passes(src, start, plan, batch_rows)
        return
    unsettled = [n for n, t in plan.types.items() if pa.types.is_null(t)]  # empty so far: Arrow infers them
    types = {n: plan.types.get(n, pa.string()) for n in plan.names if n not in unsettled}
    fields = [pa.field(n, pa.string() if n in unsettled else types[n]) for n in plan.names]
    schema = _final_schema(fields, plan.warnings, table.num_rows if last else None, 0)
    if table.num_rows == 0 and last:
        yield _empty_batch(schema)
        return
    yield from _sliced(table, schema, batch_rows)
    del table
    if last:
        return

    def rest() -> Iterator[pa.RecordBatch]:
        for chunk, first, _, _ in chunks:
            try:  # Arrow checks UTF-8 in text columns; bytes that are not UTF-8 fail any other type
                table = plan.parse(chunk, first, types, plan.names)
            except pa.ArrowInvalid:
                raise StartOver() from None
            for name in unsettled:
                found = table.column(name).type
                if not (pa.types.is_null(found) or pa.types.is_string(found)):
                    raise StartOver()  # the two passes type it by its first values; binary means not UTF-8
            yield from _sliced(table, schema, batch_rows)
            del table
            _release_memory()

    yield from _in_background(rest)


def _sliced(table: pa.Table, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    columns = []
    for f in schema:
        column = table.column(f.name).combine_chunks()
        columns.append(column if column.type == f.type else column.cast(f.type))
    whole = pa.RecordBatch.from_arrays(columns, schema=schema)
    for offset in range(0, whole.num_rows, batch_rows):
        yield whole.slice(offset, batch_rows)


def _read_csv_in_background(
    src: BinaryIO, start: int, plan: _CsvPlan, schema: pa.Schema, batch_rows: int, spool: _Spool
) -> Iterator[pa.RecordBatch]:
    """Second pass: parse the text columns beside the spooled rest and put each chunk back together."""
    text = [f.name for f in schema if pa.types.is_string(f.type)]

    def chunks() -> Iterator[tuple[pa.Table | None, int, pa.Table | None]]:
        if not text:
            for typed, rows in spool:
                yield typed, rows, None
            return
        parsed = _chunks(src, start, plan, plan.chunk_bytes)
        for (typed, rows), (chunk, first, _, _) in zip(spool, parsed, strict=True):
            yield typed, rows, plan.parse(chunk, first, dict.fromkeys(text, pa.string()), text, serial=False)

    def merged() -> Iterator[pa.RecordBatch]:
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
                yield whole.slice(offset, batch_rows)

    yield from _in_background(merged)


def _in_background(produce: Callable[[], Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """The batches of `produce()`, made in a thread one step ahead, so parsing overlaps with the consumer."""
    q: queue.Queue = queue.Queue(maxsize=1)
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

    def run() -> None:
        try:
            for batch in produce():
                if not put(batch):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    worker = threading.Thread(target=run, name="portal-csv-reader", daemon=True)
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
