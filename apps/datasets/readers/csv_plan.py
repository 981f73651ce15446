"""Plan how to read a CSV/TSV file from its head: encoding, separator, header and a first guess of column types."""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import re
from dataclasses import dataclass, field
from typing import BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from .base import DataFileError, _check_names, _normalise, _warning
from .formats import _sniff_magic

HEAD_BYTES = 1 << 20
MAX_HEADER_BYTES = 16 << 20
CHUNK_BYTES = 16 << 20
MAX_BLOCK_BYTES = (1 << 31) - 1  # Arrow's block size is a 32-bit integer


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

    def read_options(self, first: bool, *, serial: bool = False, block_size: int | None = None) -> pacsv.ReadOptions:
        # Blocks of 1-2 MB parse fastest (they stay in cache). The first pass parses with Arrow's threads; the
        # second parses on one thread while the consumer works on the previous chunk on another.
        return pacsv.ReadOptions(
            column_names=self.names,
            skip_rows=self.skip_rows if first else 0,
            block_size=block_size or ((2 << 20) if serial else (1 << 20)),
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
        try:
            return self._parse(chunk, first, types, include, self.read_options(first, serial=serial))
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc):
                raise
        # A row longer than a block (one huge cell): Arrow needs the whole row in one block.
        block = min(max(chunk.size + 1, 1 << 20), MAX_BLOCK_BYTES)
        return self._parse(chunk, first, types, include, self.read_options(first, serial=True, block_size=block))

    def _parse(self, chunk: pa.Buffer, first: bool, types: dict, include: list[str] | None,
               read_options: pacsv.ReadOptions) -> pa.Table:
        return pacsv.read_csv(
            pa.BufferReader(chunk),
            read_options=read_options,
            parse_options=self.parse_options(),
            convert_options=self.convert_options(types, include),
        )


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
