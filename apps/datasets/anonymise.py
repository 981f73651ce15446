"""Column transformations that turn a dataset version into an anonymised one (pure functions on Arrow data).

A plan maps each column to one of: keep, drop, mask, hash (keyed HMAC-SHA256, so the same value always
gives the same token within a project but cannot be reversed or recomputed without the key), or
generalise (numbers to ranges, dates to month or year).
"""

from __future__ import annotations

import hashlib
import hmac
import math

import pyarrow as pa
import pyarrow.compute as pc

METHODS = ("keep", "drop", "mask", "hash", "generalise")
DATE_LEVELS = ("month", "year")


class PlanError(ValueError):
    """A plan that cannot be applied; the message names the column."""


def validate_plan(plan: dict[str, dict], schema: list[dict]) -> dict[str, dict]:
    """Check a plan against the version's schema; fill defaults. Columns not named are kept."""
    types = {c["name"]: c["type"] for c in schema}
    unknown = sorted(set(plan) - set(types))
    if unknown:
        raise PlanError(f"Unknown column(s): {', '.join(unknown)}.")
    clean: dict[str, dict] = {}
    for name, step in plan.items():
        method = (step or {}).get("method", "keep")
        if method not in METHODS:
            raise PlanError(f"`{name}`: choose one of {', '.join(METHODS)}, not “{method}”.")
        step = {"method": method}
        if method == "generalise":
            if types[name] in {"integer", "float"}:
                width = (plan[name] or {}).get("width")
                if width is not None:
                    try:
                        width = float(width)
                    except (TypeError, ValueError):
                        raise PlanError(f"`{name}`: the range width must be a number.") from None
                    if not width > 0 or not math.isfinite(width):
                        raise PlanError(f"`{name}`: the range width must be a positive number.")
                step["width"] = width
            elif types[name] == "datetime":
                level = (plan[name] or {}).get("level", "month")
                if level not in DATE_LEVELS:
                    raise PlanError(f"`{name}`: generalise dates to month or year, not “{level}”.")
                step["level"] = level
            else:
                raise PlanError(
                    f"`{name}` is {types[name]}: only numbers and dates can be generalised; use mask or hash instead."
                )
        clean[name] = step
    if all(step["method"] == "drop" for step in clean.values()) and len(clean) == len(types):
        raise PlanError("The plan drops every column; keep at least one.")
    return clean


def nice_width(low: float, high: float, bins: int = 10) -> float:
    """A round range width (1, 2, 5 × 10^k) giving about `bins` ranges between low and high."""
    span = high - low
    if not span > 0:
        return 1.0
    raw = span / bins
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _mask(array: pa.Array) -> pa.Array:
    # Keep the first character only: enough to eyeball, not enough to identify.
    text = pc.cast(array, pa.string())
    first = pc.utf8_slice_codeunits(text, 0, 1)
    return pc.if_else(pc.equal(pc.utf8_length(text), 0), text, pc.binary_join_element_wise(first, "****", ""))


def _hash(array: pa.Array, key: bytes) -> pa.Array:
    # Hash each distinct value once (a dictionary), then expand: columns repeat values a lot.
    encoded = pc.dictionary_encode(pc.cast(array, pa.string()))
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    out = []
    for chunk in chunks:
        tokens = pa.array(
            [
                None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:20]
                for v in chunk.dictionary.to_pylist()
            ],
            pa.string(),
        )
        out.append(pc.take(tokens, chunk.indices))
    return pa.chunked_array(out, pa.string()) if isinstance(encoded, pa.ChunkedArray) else out[0]


def _generalise_number(array: pa.Array, width: float) -> pa.Array:
    values = pc.cast(array, pa.float64())
    low = pc.multiply(pc.floor(pc.divide(values, width)), width)
    high = pc.add(low, width)
    if float(width).is_integer():  # whole-number ranges read better as "30–40" than "30.0–40.0"
        low, high = pc.cast(low, pa.int64()), pc.cast(high, pa.int64())
    return pc.binary_join_element_wise(pc.cast(low, pa.string()), pc.cast(high, pa.string()), "–")


def _generalise_date(array: pa.Array, level: str) -> pa.Array:
    return pc.strftime(array, format="%Y-%m" if level == "month" else "%Y")


def apply_plan(batch: pa.RecordBatch, plan: dict[str, dict], *, key: bytes) -> pa.RecordBatch:
    """Transform one batch. Numeric `generalise` steps must have their `width` filled in (see nice_width)."""
    names, arrays = [], []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        step = plan.get(name, {"method": "keep"})
        method = step["method"]
        if method == "drop":
            continue
        if method == "mask":
            column = _mask(column)
        elif method == "hash":
            column = _hash(column, key)
        elif method == "generalise":
            column = (
                _generalise_date(column, step["level"])
                if "level" in step
                else _generalise_number(column, step["width"])
            )
        names.append(name)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=names)
