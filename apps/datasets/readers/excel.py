"""Read the first sheet of an .xlsx workbook, after refusing zip bombs by the sizes the archive declares."""

from __future__ import annotations

import contextlib
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import date, datetime, time
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as paipc

from .base import DataFileError, _check_names, _empty_batch, _final_schema, _join, _normalise, _report, _warning

MAX_XLSX_UNCOMPRESSED_BYTES = 500 * 1024 * 1024
MAX_XLSX_RATIO = 100
MAX_XLSX_MEMBERS = 10_000
XLSX_SPOOL_MEMORY_BYTES = 64 << 20
XLSX_READ_SHARE = 85
MAX_XLSX_COLUMN = 16_384  # XFD, Excel's last column; a cell beyond it cannot come from Excel


def _xml_errors() -> tuple[type[Exception], ...]:
    from xml.etree.ElementTree import ParseError

    errors: list[type[Exception]] = [ParseError]
    try:  # openpyxl parses with defusedxml when it is installed: its refusals are exceptions of their own
        from defusedxml import DefusedXmlException

        errors.append(DefusedXmlException)
    except ImportError:
        pass
    return tuple(errors)


_XML_ERRORS = _xml_errors()


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
        # keep_links=False: links to other workbooks are not even parsed; only the values Excel cached are read.
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True, keep_links=False)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError, *_XML_ERRORS) as exc:
        raise DataFileError(
            f"This .xlsx file can't be opened ({exc}). Save it again from Excel and upload it."
        ) from None
    try:
        if not workbook.worksheets:
            raise DataFileError("The workbook has no sheets.")
        sheet = workbook.worksheets[0]
        with _XlsxSpool() as spool:
            try:
                names, warnings = _read_sheet(sheet, spool, batch_rows)
            except DataFileError:
                raise
            except (*_XML_ERRORS, ValueError, TypeError, KeyError, OverflowError) as exc:
                # Entity expansion ("billion laughs"), external entities, broken XML, a cell the parser cannot
                # convert (column "ZZZZ", month 99): what Excel never writes.
                raise DataFileError(
                    f"The first sheet of this .xlsx file is not valid spreadsheet XML ({exc}). Save it again from "
                    "Excel and upload it."
                ) from None
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
    rows = _sheet_rows(sheet)
    header = None
    for cells in rows:
        if any(c["value"] is not None and str(c["value"]).strip() for c in cells):
            header = [None] * max(c["column"] for c in cells)
            for c in cells:
                header[c["column"] - 1] = c["value"]
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
    for cells in rows:
        row = [None] * width
        beyond = False
        for c in cells:
            if c["column"] <= width:
                row[c["column"] - 1] = c["value"]
            elif c["value"] is not None:
                beyond = True
        ignored += beyond
        if not any(v is not None for v in row):
            continue
        buffer.append(tuple(row))
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


def _sheet_rows(sheet) -> Iterator[list[dict]]:
    """The sheet's rows as the cells they hold ({"column": 1-based, "value", ...}), straight from the XML.

    Not openpyxl's `iter_rows`: in read-only mode that trusts the sheet's declared size (rows past it are
    dropped silently), pads every row to the widest one (one cell in column XFD makes each row 16,384
    values) and yields an empty row for every row number skipped (`<row r="999999999">`: a billion). Here
    missing rows and cells cost nothing; the parser is openpyxl's own (defused XML, shared strings, dates).
    """
    from openpyxl.worksheet._reader import WorkSheetParser

    workbook = sheet.parent
    with sheet._get_source() as source:
        parser = WorkSheetParser(source, sheet._shared_strings, data_only=workbook.data_only, epoch=workbook.epoch,
                                 date_formats=workbook._date_formats,
                                 timedelta_formats=workbook._timedelta_formats)
        for _, cells in parser.parse():
            yield [c for c in cells if 1 <= c["column"] <= MAX_XLSX_COLUMN]


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
