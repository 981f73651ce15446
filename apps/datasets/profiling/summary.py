"""The profile's JSON from the finished columns and the sample: statistics, histograms, correlations, warnings."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import pii, readers
from .arrays import _np, _unique_sorted
from .columns import _Column

TOP_VALUES = 10
CATEGORICAL_MAX = 1_000
ROW_HASH_LIMIT = 32_000_000  # rows whose hashes are kept to count duplicate rows (8 bytes each)
HISTOGRAM_BINS = 20
MAX_CORRELATION_COLUMNS = 30
PII_VALUES = 2_000


def _empty_profile() -> dict:
    return {
        "row_count": 0,
        "column_count": 0,
        "duplicate_rows": 0,
        "sampled_rows": 0,
        "columns": [],
        "correlations": {"columns": [], "matrix": []},
        "warnings": [],
    }


def _summarise(columns: list[_Column], sampled: list, sampled_rows: int, rows: int, row_hashes, schema, pool) -> dict:
    warnings = list(json.loads((schema.metadata or {}).get(readers.WARNINGS_KEY, b"[]")))
    work = [(column, sampled[i], rows) for i, column in enumerate(columns)]
    results = list(pool.map(_describe, *zip(*work, strict=True))) if pool is not None and work else []
    if pool is None:
        results = [_describe(*args) for args in work]
    described = [info for info, _ in results]
    for _, column_warnings in results:
        warnings.extend(column_warnings)
    duplicates = _duplicate_rows(described, row_hashes, rows)
    if duplicates:
        warnings.insert(
            0,
            _warning(
                None, "duplicates", f"{duplicates:,} rows ({_pct(duplicates, rows)}) are exact copies of an earlier row"
            ),
        )
    elif duplicates is None:
        warnings.insert(
            0, _warning(None, "duplicates", f"Duplicate rows were not counted (more than {ROW_HASH_LIMIT:,} rows)")
        )
    return {
        "row_count": rows,
        "column_count": len(columns),
        "duplicate_rows": duplicates,
        "sampled_rows": sampled_rows,
        "columns": described,
        "correlations": _correlations(columns, described, sampled),
        "warnings": warnings,
    }


def _duplicate_rows(described: list[dict], row_hashes, rows: int) -> int | None:
    if any(c["distinct"] == rows and c["distinct_is_exact"] and not c["missing"] for c in described):
        return 0  # a column with a different value in every row: no two rows are equal
    if row_hashes is None:
        return None
    if not row_hashes:
        return 0
    return rows - len(_unique_sorted(np.concatenate(row_hashes)))


def _warning(column: str | None, kind: str, message: str) -> dict:
    return {"column": column, "kind": kind, "message": message}


def _pct(part: int, whole: int) -> str:
    share = 100 * part / whole if whole else 0.0
    if share >= 10 or share == int(share):
        return f"{share:.0f}%"
    return f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _number(x, kind: str):
    return int(x) if kind == "int" else _f(x)


def _logical_type(column: _Column, distinct: int) -> str:
    if column.kind == "str":
        small = column.counts is not None and distinct <= CATEGORICAL_MAX
        return "categorical" if small and distinct <= max(1, column.count // 2) else "text"
    return {"int": "integer", "float": "float", "bool": "boolean", "time": "datetime", "null": "text"}[column.kind]


def _describe(column: _Column, sampled: pa.Array, rows: int) -> tuple[dict, list[dict]]:
    distinct, exact = column.result
    logical = _logical_type(column, distinct)
    values = _sample_values(column, sampled)
    info = {
        "name": column.name,
        "type": logical,
        "arrow_type": str(column.type),
        "missing": column.missing,
        "missing_pct": round(100 * column.missing / rows, 2) if rows else 0.0,
        "distinct": distinct,
        "distinct_is_exact": exact,
        "numeric": None,
        "datetime": None,
        "top_values": _top_values(column),
        "histogram": None,
        "pii": None,
    }
    if column.moments is not None and column.lo is not None:
        m = column.moments
        quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(values) else [None] * 5
        info["numeric"] = {
            "min": _number(column.lo, column.kind),
            "max": _number(column.hi, column.kind),
            "mean": _f(m.mean),
            "std": _f(math.sqrt(m.m2 / (m.n - 1))) if m.n > 1 else None,
            "quantiles": {
                k: (None if q is None else _f(q))
                for k, q in zip(("p5", "p25", "p50", "p75", "p95"), quantiles, strict=True)
            },
        }
        info["histogram"] = _numeric_histogram(column, values)
    elif column.kind == "time" and column.lo is not None:
        info["datetime"] = {"min": _iso(column.lo, column.type), "max": _iso(column.hi, column.type)}
        info["histogram"] = _time_histogram(column, values)
    info["pii"] = _pii(column, sampled)
    warnings: list[dict] = []
    _column_warnings(column, info, rows, sampled, warnings)
    return info, warnings


def _sample_values(column: _Column, sampled: pa.Array) -> np.ndarray:
    """The sample's non-missing finite values as a NumPy array (int64 for times, float64 for numbers)."""
    if column.kind not in ("int", "float", "time") or not len(sampled):
        return np.empty(0)
    if column.kind == "time":
        arr = sampled.cast(pa.timestamp("s")) if pa.types.is_date(sampled.type) else sampled
        return _np(arr.cast(pa.int64()).drop_null())
    x = _np(sampled.cast(pa.float64()).drop_null())
    return x[np.isfinite(x)]


def _top_values(column: _Column) -> list[dict] | None:
    if column.counts is None or not column.counts:
        return None
    labelled = [(_text(value, column), count) for value, count in column.counts.items()]
    ranked = sorted(labelled, key=lambda vc: (-vc[1], vc[0]))[:TOP_VALUES]
    return [{"value": value, "count": int(count)} for value, count in ranked]


def _text(value, column: _Column) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if column.kind == "time":
        return _iso(value, column.type)
    return str(value)


def _largest_remainder(weights: np.ndarray, total: int) -> list[int]:
    """Scale sample counts to `total` exactly."""
    if not total or weights.sum() == 0:
        return [0] * len(weights)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts.tolist()


def _numeric_histogram(column: _Column, values: np.ndarray) -> dict | None:
    total = column.count - column.infinite
    if not len(values) or not total:
        return None
    edges = _nice_edges(float(column.lo), float(column.hi), whole=column.kind == "int")
    if len(edges) > 2 or edges[0] != edges[-1]:
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    else:
        counts = np.array([len(values)])
    return {
        "edges": [int(e) if column.kind == "int" else _f(e) for e in edges],
        "counts": _largest_remainder(counts, total),
    }


def _nice_edges(lo: float, hi: float, *, whole: bool) -> np.ndarray:
    """About HISTOGRAM_BINS bins with round edges: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if whole and hi - lo < HISTOGRAM_BINS:
        return np.arange(lo, hi + 2)  # one bar per whole number
    if hi <= lo:
        return np.array([lo, hi])
    raw = (hi - lo) / HISTOGRAM_BINS
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and (not whole or m * power >= 1))
    if whole:
        step = max(1.0, round(step))
    start, stop = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = max(1, round((stop - start) / step))
    decimals = max(0, 2 - math.floor(math.log10(step)))
    return np.round(start + step * np.arange(count + 1), decimals)


_PERIODS = [("h", 3600), ("D", 86400), ("M", 86400 * 31), ("Y", 86400 * 366)]


def _time_histogram(column: _Column, values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    unit = column.type.unit if pa.types.is_timestamp(column.type) else "s"
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    span = (int(column.hi) - int(column.lo)) / per_second
    period = next((p for p, seconds in _PERIODS if span / seconds <= 60), "Y")
    stamps = values.astype(f"datetime64[{unit}]")
    lo = np.datetime64(int(column.lo), unit).astype(f"datetime64[{period}]")
    hi = np.datetime64(int(column.hi), unit).astype(f"datetime64[{period}]")
    periods = np.arange(lo, hi + 1)
    counts = np.bincount(np.searchsorted(periods, stamps.astype(f"datetime64[{period}]")), minlength=len(periods))
    labels = periods.astype("datetime64[m]" if period == "h" else "datetime64[D]")
    return {
        "periods": [str(p) for p in np.datetime_as_string(labels)],
        "counts": _largest_remainder(counts[: len(periods)], column.count),
    }


def _iso(value, t: pa.DataType) -> str:
    unit = t.unit if pa.types.is_timestamp(t) else "s"
    text = str(np.datetime_as_string(np.datetime64(int(value), unit)))
    return text + ("Z" if pa.types.is_timestamp(t) and t.tz else "")


def _pii(column: _Column, sampled: pa.Array) -> dict | None:
    if column.kind in ("float", "bool", "null") or not len(sampled):
        return None
    if column.kind != "str" and not pii.hinted_kinds(column.name):
        return None  # numbers and dates are personal data only when the name says so (zip, phone, dob)
    arr = sampled.drop_null().slice(0, PII_VALUES)
    if column.kind == "time":
        arr = arr.cast(pa.timestamp("s")).cast(pa.date32()) if pa.types.is_timestamp(arr.type) else arr
    return pii.detect_array(column.name, arr.cast(pa.string()))


_NON_NEGATIVE = (
    r"(^|_)(age|ages|count|counts|qty|quantity|quantities|price|prices|amount|income|salary|wage|weight|height|"
    r"length|width|depth|duration|distance|size|year|years|days|hours|minutes|seconds|n|num|number)(_|$)"
)


def _column_warnings(column: _Column, info: dict, rows: int, sampled, warnings: list[dict]) -> None:
    name = column.name
    add = warnings.append
    if rows and column.missing == rows:
        add(_warning(name, "empty", f"`{name}` is empty: every value is missing"))
        return
    if rows and column.missing / rows >= 0.05:
        add(_warning(name, "missing", f"{_pct(column.missing, rows)} of `{name}` is missing"))
    if info["distinct"] == 1 and rows > 1:
        single = info["top_values"][0]["value"] if info["top_values"] else None
        add(_warning(name, "constant", f"`{name}` has a single value" + (f" ({single})" if single else "")))
    if (
        column.kind in ("int", "str")
        and rows >= 10
        and not column.missing
        and info["distinct_is_exact"]
        and info["distinct"] == rows
    ):
        add(_warning(name, "identifier", f"`{name}` is unique: probably an identifier"))
    if column.negatives:
        normalised = re.sub(r"[^0-9a-z]+", "_", name.lower())
        if re.search(_NON_NEGATIVE, normalised) or column.negatives <= 0.01 * column.count:
            add(_warning(name, "negative", f"`{name}` has negative values ({_plural(column.negatives, 'row')})"))
    if column.infinite:
        add(
            _warning(
                name,
                "infinite",
                f"`{name}` has {_plural(column.infinite, 'infinite value')}; the statistics leave them out",
            )
        )
    if info["type"] == "text" and CATEGORICAL_MAX < info["distinct"] <= column.count // 2:  # repeats, too many
        add(
            _warning(
                name,
                "high_cardinality",
                f"`{name}` has {info['distinct']:,} different values: it is treated as free text, not as a category",
            )
        )
    if info["pii"]:
        label = pii.KIND_LABELS.get(info["pii"]["kind"], info["pii"]["kind"])
        add(_warning(name, "pii", f"`{name}` looks like personal data ({label}): hidden from viewers"))
    if column.kind == "str" and len(sampled):
        _formula_warning(name, sampled, add)


def _formula_warning(name: str, sampled: pa.Array, add) -> None:
    risky = sampled.filter(pc.fill_null(pc.match_substring_regex(sampled, r"^(?:[=@\t\r]|[+-][^\d\s.,])"), False))
    if len(risky):
        example = risky[0].as_py()
        example = example if len(example) <= 40 else example[:37] + "…"
        add(
            _warning(
                name,
                "formula",
                f"`{name}` has values that start with =, +, - or @ (e.g. “{example}”). The portal stores and shows "
                "them as plain text and never runs them, but a spreadsheet may treat them as formulas: take care "
                "when opening exported data in Excel",
            )
        )


def _correlations(columns: list[_Column], described: list[dict], sampled: list) -> dict:
    """Pearson correlations between numeric columns on the sample, each pair over rows where both are present."""
    chosen = [
        i
        for i, (c, d) in enumerate(zip(columns, described, strict=True))
        if c.kind in ("int", "float") and d["numeric"] and d["distinct"] > 1
    ][:MAX_CORRELATION_COLUMNS]
    if len(chosen) < 2 or not len(sampled[chosen[0]]):
        return {"columns": [], "matrix": []}
    x = np.column_stack([_np(sampled[i].cast(pa.float64()).fill_null(np.nan)) for i in chosen])
    present = np.isfinite(x)
    centred = np.where(present, x - np.nanmean(np.where(present, x, np.nan), axis=0), 0.0)
    m = present.astype(np.float64)
    n = m.T @ m
    sx = centred.T @ m  # sx[i, j]: sum of x_i over rows where x_i and x_j are present
    sxx = (centred * centred).T @ m
    sxy = centred.T @ centred
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        r = cov / np.sqrt(var_i * var_i.T)
    matrix = []
    for a in range(len(chosen)):
        row = []
        for b in range(len(chosen)):
            value = 1.0 if a == b else r[a, b]
            row.append(round(float(value), 4) if n[a, b] >= 3 and math.isfinite(value) else None)
        matrix.append(row)
    return {"columns": [described[i]["name"] for i in chosen], "matrix": matrix}
