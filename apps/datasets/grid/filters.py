"""Parse the grid's per-column filter syntax into a row mask."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import _BOOL, _FLOAT, _INT, _OTHER, _TEMPORAL, _TEXT, GridQueryError, _Column

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
