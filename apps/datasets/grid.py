"""The data grid: one page of a dataset version's rows, sorted and filtered on the server.

A version's typed Parquet copy is read once into an Arrow table held in a small per-process LRU cache.
Each request then works on whole columns at C speed (a filter mask, a partial sort) and turns only the
page's rows into Python values, so any page of a million rows answers in tens of milliseconds.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MAX_PAGE_SIZE = 500
# Each cached version costs about its in-memory size (a 1M x 20 table is ~200 MB), in every web process.
CACHE_ENTRIES = 4
CACHE_BYTES = 2 * 1024**3
# Text columns with fewer distinct values than this share of a sample are indexed by value on first use.
_CATEGORICAL_SHARE = 0.5
_SAMPLE_ROWS = 2000
# Beyond this many texts sharing the sort window's 8-byte prefixes, rank the whole column once instead.
_MAX_PREFIX_TIES = 50_000


class GridQueryError(ValueError):
    """A page request the grid cannot answer; the message names the parameter or column and says why."""


@dataclass(frozen=True)
class GridPage:
    columns: list[str]
    rows: list[list]  # JSON-serialisable cell values (datetimes as ISO strings, None for null)
    total: int  # rows matching the filters
    page: int
    page_size: int
    pages: int


def read_page(
    key: str,
    opener: Callable[[], BinaryIO],
    *,
    page: int = 1,
    page_size: int = 50,
    sort: str | None = None,
    descending: bool = False,
    filters: Mapping[str, str] | None = None,
    hidden_columns: Collection[str] = (),
) -> GridPage:
    """One page of the rows of the Parquet file `opener()` returns, matching `filters`, ordered by `sort`.

    `key` names the immutable file (a version's id): the rows are read once per process and cached.
    Sorting is stable (ties keep file order) with empty cells last in both directions. A page past the
    end comes back with no rows and the right total. page_size is capped at MAX_PAGE_SIZE.
    Filter syntax, per column: `text` (contains, ignoring case, for text; equals for numbers, booleans
    and dates), `=x` exact, `!x` everything else (empty cells included), `>x` `>=x` `<x` `<=x` for
    numbers and dates, `is:empty`, `is:notempty`. A date may be partial: `2024-03` is that month.
    A leading backslash makes the rest plain text (`\\>5` contains ">5").
    """
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise GridQueryError("page must be a whole number, 1 or more.")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise GridQueryError("page_size must be a whole number, 1 or more.")
    page_size = min(page_size, MAX_PAGE_SIZE)
    version = _cached_version(key, opener)
    hidden = set(hidden_columns)
    visible = [i for i, name in enumerate(version.names) if name not in hidden]
    sort_column = version.column(sort, hidden, purpose="sort by") if sort else None
    if sort_column is not None and sort_column.kind == _OTHER:
        raise GridQueryError(
            f"The column “{sort}” cannot be sorted: its values ({sort_column.array.type}) have no order."
        )

    mask = None
    for name, text in (filters or {}).items():
        if text is None or not str(text).strip():
            continue
        column_mask = _filter_mask(version.column(name, hidden, purpose="filter on"), str(text).strip())
        mask = column_mask if mask is None else mask & column_mask
    selected = None if mask is None else np.flatnonzero(mask)

    total = version.num_rows if selected is None else len(selected)
    start, stop = (page - 1) * page_size, min(page * page_size, total)
    if start >= total:
        indices = np.empty(0, dtype=np.int64)
    elif sort_column is not None:
        indices = _sorted_window(sort_column, selected, start, stop, descending=descending)
    else:
        indices = np.arange(start, stop) if selected is None else selected[start:stop]
    return GridPage(
        columns=[version.names[i] for i in visible],
        rows=version.rows(visible, indices),
        total=total,
        page=page,
        page_size=page_size,
        pages=max(1, math.ceil(total / page_size)),
    )


def clear_cache() -> None:
    with _lock:
        _cache.clear()


# --- The per-process cache ---------------------------------------------------------------------------------

_cache: OrderedDict[str, _Version] = OrderedDict()
_lock = threading.Lock()


def _cached_version(key: str, opener: Callable[[], BinaryIO]) -> _Version:
    with _lock:
        version = _cache.get(key)
        if version is not None:
            _cache.move_to_end(key)
            return version
    # Read outside the lock so a cold version does not stall requests for warm ones. Two requests racing
    # for the same cold version both read it; the later one simply replaces the earlier in the cache.
    # ParquetFile.read, not read_table: read_table's pre-buffering on a Python file object leaves pyarrow
    # I/O threads behind that abort the interpreter at exit (pyarrow 25).
    with opener() as handle:
        version = _Version(pq.ParquetFile(handle).read())
    with _lock:
        _cache[key] = version
        _cache.move_to_end(key)
        while len(_cache) > 1 and (len(_cache) > CACHE_ENTRIES or sum(v.nbytes for v in _cache.values()) > CACHE_BYTES):
            _cache.popitem(last=False)
    return version


# Column kinds, which decide the filters a column accepts and how it sorts.
_INT, _FLOAT, _BOOL, _TEXT, _TEMPORAL, _OTHER = "integer", "number", "boolean", "text", "date", "other"


def _kind(type_: pa.DataType) -> str:
    if pa.types.is_integer(type_):
        return _INT
    if pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return _FLOAT
    if pa.types.is_boolean(type_):
        return _BOOL
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return _TEXT
    if pa.types.is_date(type_) or pa.types.is_timestamp(type_):
        return _TEMPORAL
    return _OTHER


class _Version:
    """One version's rows in memory, with per-column lookups built lazily on first use."""

    def __init__(self, table: pa.Table):
        # Categorical columns written from pandas arrive dictionary-encoded: decode them so every text
        # column is handled alike. One contiguous chunk per column makes takes and numpy views cheap.
        for i, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):
                table = table.set_column(i, field.name, pc.cast(table.column(i), field.type.value_type))
        self.table = table.combine_chunks()
        self.names = list(self.table.column_names)
        self._positions = {}
        for i, name in enumerate(self.names):
            self._positions.setdefault(name, i)  # duplicate names: the first one answers to the name
        self.num_rows = self.table.num_rows
        self.nbytes = self.table.nbytes
        self._columns: dict[str, _Column] = {}

    def column(self, name: str, hidden: set[str], *, purpose: str) -> _Column:
        if name in hidden or name not in self._positions:  # one answer for both: hidden columns stay secret
            raise GridQueryError(f"Unknown column “{name}”: there is no such column to {purpose}.")
        column = self._columns.get(name)
        if column is None:
            column = self._columns[name] = _Column(name, _one_chunk(self.table.column(self._positions[name])))
        return column

    def rows(self, positions: list[int], indices: np.ndarray) -> list[list]:
        if not len(indices):
            return []
        taken = pa.array(indices)
        columns = [_json_values(self.table.column(i).take(taken)) for i in positions]
        return [list(row) for row in zip(*columns, strict=True)] if columns else [[] for _ in indices]


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # the latter copies


def _valid(array: pa.Array) -> np.ndarray | None:
    return None if array.null_count == 0 else pc.is_valid(array).to_numpy(zero_copy_only=False)


def _prefix_keys(array: pa.Array) -> np.ndarray:
    """Each string's first 8 bytes as a big-endian uint64 (zero-padded): a < b implies key(a) <= key(b)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if pa.types.is_large_string(array.type) else np.int32)[
        array.offset : array.offset + len(array) + 1
    ]
    data = array.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8)[: offsets[-1]] if data is not None else np.empty(0, np.uint8)
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    grams = np.lib.stride_tricks.sliding_window_view(padded, 8)[offsets[:-1]]
    grams[np.arange(8) >= np.diff(offsets)[:, None]] = 0
    return grams.view(">u8").ravel().astype(np.uint64)


class _Column:
    """A column with the numpy keys its filters and sorts work on."""

    def __init__(self, name: str, array: pa.Array):
        self.name = name
        self.array = array
        self.kind = _kind(array.type)
        self._text: _TextIndex | None = None
        self._text_is_categorical: bool | None = None
        self._prefixes: np.ndarray | None = None

    def keys(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Numbers that order like the values (texts: their rank), and the non-empty rows (None: all)."""
        if self.kind == _TEXT:
            return self.text_index().ranks()
        array = self.array
        if self.kind == _FLOAT:
            array = pc.cast(array, pa.float64()) if pa.types.is_decimal(array.type) else array
            values = pc.fill_null(array, np.nan).to_numpy(zero_copy_only=False)
            valid = ~np.isnan(values)
            return values, (None if valid.all() else valid)
        if self.kind == _BOOL:
            array = pc.cast(array, pa.uint8())
        elif self.kind == _TEMPORAL:
            array = pc.cast(array, pa.int32() if pa.types.is_date32(array.type) else pa.int64())
        return pc.fill_null(array, 0).to_numpy(zero_copy_only=False), _valid(array)

    def sort_keys(self) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """Like keys(), and whether they are exact. Long texts use their first 8 bytes: building their
        ranks costs ~0.5 s per million rows, while ties on the prefix are cheap to sort per page.
        """
        if self.kind != _TEXT or self.text_index(only_if_cheap=True) is not None:
            return (*self.keys(), True)
        if self._prefixes is None:
            self._prefixes = _prefix_keys(self.array)
        return self._prefixes, _valid(self.array), False

    def text_index(self, *, only_if_cheap: bool = False) -> _TextIndex | None:
        """The column's distinct values and a code per row; worth building up front only for categories."""
        if self._text is None:
            if only_if_cheap and not self._looks_categorical():
                return None
            self._text = _TextIndex(self.array)
        return self._text

    def _looks_categorical(self) -> bool:
        if self._text_is_categorical is None:
            n = len(self.array)
            sample = self.array.take(np.linspace(0, n - 1, min(n, _SAMPLE_ROWS), dtype=np.int64))
            self._text_is_categorical = pc.count_distinct(sample).as_py() < _CATEGORICAL_SHARE * len(sample)
        return self._text_is_categorical


class _TextIndex:
    """A text column as distinct values plus a code per row (nulls get the extra code len(values))."""

    def __init__(self, array: pa.Array):
        encoded = pc.dictionary_encode(array)
        self.values = encoded.dictionary
        self.null_code = len(self.values)
        self.codes = pc.fill_null(encoded.indices, self.null_code).to_numpy(zero_copy_only=False)
        self.has_nulls = array.null_count > 0
        self._ranks: tuple[np.ndarray, np.ndarray | None] | None = None

    def rows_where(self, value_mask: np.ndarray, *, null: bool) -> np.ndarray:
        return np.append(value_mask, null)[self.codes]

    def ranks(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._ranks is None:
            order = pc.array_sort_indices(self.values).to_numpy()
            rank_of_code = np.zeros(self.null_code + 1, dtype=np.int32)
            rank_of_code[order] = np.arange(len(order), dtype=np.int32)
            valid = (self.codes != self.null_code) if self.has_nulls else None
            self._ranks = rank_of_code[self.codes], valid
        return self._ranks


# --- Sorting --------------------------------------------------------------------------------------------------


def _sorted_window(
    column: _Column, selected: np.ndarray | None, start: int, stop: int, *, descending: bool
) -> np.ndarray:
    """Row indices at positions [start, stop) of the (selected) rows stably sorted by `column`, nulls last."""
    keys, valid, exact = column.sort_keys()
    if descending:  # order-reversing and exact: -x for floats, ~x (= -x-1, or max-x unsigned) for integers
        keys = -keys if keys.dtype.kind == "f" else ~keys
    rows = selected  # row index of each entry of keys (None: the same)
    if selected is not None:
        keys = keys[selected]
        valid = None if valid is None else valid[selected]
    nulls = np.empty(0, dtype=np.int64)
    if valid is not None:
        non_null, null = np.flatnonzero(valid), np.flatnonzero(~valid)
        rows, nulls = (non_null, null) if rows is None else (rows[non_null], rows[null])
        keys = keys[non_null]

    def to_rows(positions: np.ndarray) -> np.ndarray:
        return positions if rows is None else rows[positions]

    def order_ties(candidates: np.ndarray) -> np.ndarray:
        """Candidates (in file order) whose prefixes tie, in full-text order."""
        if len(candidates) > _MAX_PREFIX_TIES:  # texts alike for 8 bytes: rank them all once instead
            ranks, _valid_rows = column.text_index().ranks()
            tied = ranks[to_rows(candidates)]
            return candidates[np.argsort(~tied if descending else tied, kind="stable")]
        strings = column.array.take(to_rows(candidates))
        order = pc.array_sort_indices(strings, order="descending" if descending else "ascending")
        return candidates[order.to_numpy()]

    parts = []
    if start < len(keys):
        parts.append(to_rows(_stable_window(keys, start, min(stop, len(keys)), None if exact else order_ties)))
    if stop > len(keys):
        parts.append(nulls[max(0, start - len(keys)) : stop - len(keys)])
    return np.concatenate(parts)


def _stable_window(
    keys: np.ndarray, start: int, stop: int, order_ties: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Positions [start, stop) of a stable argsort of `keys`, in O(n) rather than sorting everything.

    A partition finds the first and last key of the window; only the entries with keys between them are
    sorted (by `order_ties` when the keys are coarser than the values). Entries tied with the first key
    fill the window after those strictly below it, in file order.
    """
    bounds = np.partition(keys, sorted({start, stop - 1}))
    low, high = bounds[start], bounds[stop - 1]
    below = np.count_nonzero(keys < low)
    candidates = np.flatnonzero((keys >= low) & (keys <= high))
    if order_ties is None:
        candidates = candidates[np.argsort(keys[candidates], kind="stable")]
    else:
        candidates = order_ties(candidates)
    return candidates[start - below : stop - below]


# --- Filtering ------------------------------------------------------------------------------------------------

_OPERATORS = (">=", "<=", "!=", ">", "<", "=", "!")
_TRUE, _FALSE = {"true", "t", "yes", "y", "1"}, {"false", "f", "no", "n", "0"}


def _parse(text: str) -> tuple[str, str]:
    lowered = text.lower()
    if lowered in ("is:empty", "is:notempty"):
        return lowered, ""
    if text.startswith("\\"):
        return "", text[1:]
    for op in _OPERATORS:
        if text.startswith(op):
            return op, text[len(op) :].strip()
    return "", text


def _filter_mask(column: _Column, text: str) -> np.ndarray:
    op, operand = _parse(text)
    if op in ("is:empty", "is:notempty"):
        empty = _empty_mask(column)
        return empty if op == "is:empty" else ~empty
    if not operand:
        raise GridQueryError(f"The filter on “{column.name}” has nothing after “{op}”: add a value.")
    if column.kind == _TEXT:
        return _text_mask(column, op, operand)
    if column.kind == _OTHER:
        raise GridQueryError(
            f"The column “{column.name}” ({column.array.type}) can only be filtered with is:empty or is:notempty."
        )
    keys, valid = column.keys()
    if column.kind == _TEMPORAL:
        low, high = _period(column, operand)
        compare = {
            "": lambda: (keys >= low) & (keys < high),
            "=": lambda: (keys >= low) & (keys < high),
            ">": lambda: keys >= high,
            ">=": lambda: keys >= low,
            "<": lambda: keys < low,
            "<=": lambda: keys < high,
        }
    elif column.kind == _BOOL:
        if op not in ("", "=", "!", "!="):
            raise GridQueryError(
                f"The column “{column.name}” holds true/false values: filter it with "
                "true, false, !true, is:empty or is:notempty."
            )
        value = _parse_bool(column, operand)
        compare = {"": lambda: keys == value, "=": lambda: keys == value}
    else:
        value = _parse_number(column, operand)
        compare = {
            "": lambda: keys == value,
            "=": lambda: keys == value,
            ">": lambda: keys > value,
            ">=": lambda: keys >= value,
            "<": lambda: keys < value,
            "<=": lambda: keys <= value,
        }
    if op in ("!", "!="):
        matched = compare["="]()
        return ~matched if valid is None else ~(matched & valid)
    matched = compare[op]()
    return matched if valid is None else matched & valid


def _empty_mask(column: _Column) -> np.ndarray:
    if column.kind == _TEXT:
        index = column.text_index(only_if_cheap=True)
        if index is not None:
            return index.rows_where(_blank(index.values).to_numpy(zero_copy_only=False), null=True)
        return pc.fill_null(_blank(column.array), True).to_numpy(zero_copy_only=False)
    if column.kind in (_INT, _FLOAT, _BOOL, _TEMPORAL):
        _keys, valid = column.keys()
        return np.zeros(len(column.array), dtype=bool) if valid is None else ~valid
    return pc.is_null(column.array).to_numpy(zero_copy_only=False)


def _blank(strings: pa.Array) -> pa.Array:
    return pc.equal(pc.utf8_trim_whitespace(strings), "")


def _text_mask(column: _Column, op: str, operand: str) -> np.ndarray:
    if op not in ("", "=", "!", "!="):
        raise GridQueryError(
            f"The column “{column.name}” holds text: filter it with text to look for, =text, "
            "!text, is:empty or is:notempty (start with \\ to look for a leading “>”, “<”, "
            "“=” or “!”)."
        )
    exact = op in ("=", "!=")

    def match(strings: pa.Array) -> pa.Array:
        if exact:
            return pc.equal(strings, operand)
        # Lower-casing first is twice as fast as a case-insensitive match, and ASCII text is the common case.
        lowered = pc.ascii_lower(strings) if _is_ascii(strings) else pc.utf8_lower(strings)
        return pc.match_substring(lowered, operand.lower())

    index = column.text_index(only_if_cheap=True)
    if index is not None:  # match each distinct value once, then spread to the rows by code
        matched = index.rows_where(pc.fill_null(match(index.values), False).to_numpy(zero_copy_only=False), null=False)
    else:
        matched = pc.fill_null(match(column.array), False).to_numpy(zero_copy_only=False)
    return ~matched if op.startswith("!") else matched


def _is_ascii(strings: pa.Array) -> bool:
    data = strings.buffers()[2]
    return data is None or not (np.frombuffer(data, dtype=np.uint8) & 0x80).any()


def _parse_number(column: _Column, text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise GridQueryError(
            f"The column “{column.name}” holds numbers: “{text}” is not a number. Use for example 42, >10 or <=3.5."
        ) from None
    return value


def _parse_bool(column: _Column, text: str) -> int:
    lowered = text.lower()
    if lowered in _TRUE or lowered in _FALSE:
        return int(lowered in _TRUE)
    raise GridQueryError(f"The column “{column.name}” holds true/false values: “{text}” is neither. Use true or false.")


_DATE = re.compile(
    r"(\d{4})(?:-(\d{1,2})(?:-(\d{1,2})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH = datetime(1970, 1, 1)  # naive on purpose: typed instants are compared as naive UTC


def _period(column: _Column, text: str) -> tuple[int, int]:
    """The column's keys [low, high) covering the date or time written, as precise as it is written."""
    match = _DATE.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        start = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
        if fraction:
            end = start + timedelta(microseconds=1)
        elif second or minute:
            end = start + (timedelta(seconds=1) if second else timedelta(minutes=1))
        elif day:
            end = start + timedelta(days=1)
        elif month:
            end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
        if offset and offset != "Z":  # a written UTC offset: compare in UTC, as the column stores instants
            sign = 1 if offset[0] == "+" else -1
            shift = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[-2:]))
            start, end = start - shift, end - shift
    except (ValueError, OverflowError):
        raise GridQueryError(
            f"The column “{column.name}” holds dates: “{text}” is not a date. Use an ISO date "
            "such as 2024-03-15, 2024-03 or 2024-03-15T14:30, e.g. >=2024-01-01."
        ) from None
    return _to_key(start, column.array.type), _to_key(end, column.array.type)


def _to_key(moment: datetime, type_: pa.DataType) -> int:
    """The smallest key of the column's unit at or after `moment` (so `key >= it` means `value >= moment`)."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    if pa.types.is_date32(type_):
        unit = 86_400_000_000
    elif pa.types.is_date64(type_):
        unit = 1000
    else:
        unit = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 1}[type_.unit]
        micros *= 1000 if type_.unit == "ns" else 1
    return -(-micros // unit)


# --- Cell values ----------------------------------------------------------------------------------------------

_PASS_THROUGH = (pa.types.is_integer, pa.types.is_string, pa.types.is_large_string, pa.types.is_boolean)


def _json_values(column: pa.ChunkedArray) -> list:
    values = column.to_pylist()
    if any(test(column.type) for test in _PASS_THROUGH):
        return values
    return [_jsonable(v) for v in values]


def _jsonable(value):
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | timedelta):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)
