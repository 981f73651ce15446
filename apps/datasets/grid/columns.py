"""A version's rows in memory, and the per-column keys and indexes that filters and sorts work on."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Text columns with fewer distinct values than this share of a sample are indexed by value on first use.
_CATEGORICAL_SHARE = 0.5
_SAMPLE_ROWS = 2000


class GridQueryError(ValueError):
    """A page request the grid cannot answer; the message names the parameter or column and says why."""


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
        # From the buffer, not pa.array(indices): that imports pandas (0.3 s) on a process's first call.
        indices = np.ascontiguousarray(indices, dtype=np.int64)
        taken = pa.Array.from_buffers(pa.int64(), len(indices), [None, pa.py_buffer(indices)])
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
