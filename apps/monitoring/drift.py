"""Drift arithmetic on binned counts: reference bins, PSI, a KS or chi-square test, and a verdict.

Pure (NumPy and SciPy only), so the rollups, the pages and the benchmark share it. Numeric features get 20
quantile bins of the reference (open at both ends); categorical ones the reference's most frequent values plus an
"other" bin. Counts in these bins are additive, so a window's distribution is the sum of its rollups' counts.

The verdict rests on the effect size (PSI: below 0.1 stable, below 0.25 moderate, else high), not on the p-value
alone: with a million rows every test is "significant", and a dashboard that cries wolf is ignored. The test
has to agree (p < 0.05) before a shift is called moderate or high, so a small sample's noise is not either.
"""

from __future__ import annotations

import math

import numpy as np

NUMERIC_BINS = 20
TOP_CATEGORIES = 20
PSI_MODERATE, PSI_HIGH = 0.1, 0.25
SIGNIFICANCE = 0.05
MIN_SAMPLES = 100  # fewer rows in a window: no verdict
_EPSILON = 1e-4  # floor of a bin's share in PSI, so an empty bin does not make it infinite


def is_numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "biuf"


def as_float(values) -> np.ndarray:
    """Numbers as float64 with NaN for anything missing or not a number (strings that parse are numbers)."""
    if _is_arrow(values):
        return _arrow_floats(values)
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False)
    try:  # the common case, in C: numbers and None (None becomes NaN)
        return np.array(arr, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    import pandas as pd

    return pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def as_text(values) -> np.ndarray:
    """Categorical values as strings, with None for missing."""
    arr = np.asarray(values, dtype=object)
    out = np.empty(len(arr), dtype=object)
    for i, v in enumerate(arr):  # a plain loop beats pandas' round trip for the sizes rollups see
        out[i] = v if isinstance(v, str) else (None if v is None or v != v else str(v))
    return out


# --- Arrow columns (whole tables: the benchmark, reference data read from Parquet) -----------------------------


def _is_arrow(values) -> bool:
    return type(values).__module__.startswith("pyarrow")


def _arrow_floats(values) -> np.ndarray:
    """A numeric Arrow column as float64, nulls as NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not _arrow_is_numeric(values):
        raise TypeError(f"not a numeric column ({values.type})")
    return np.asarray(pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)


def _arrow_is_numeric(values) -> bool:
    import pyarrow as pa

    t = values.type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _arrow_value_counts(values) -> tuple[list[str], np.ndarray, int]:
    """(distinct non-missing values as text, their counts, missing count), counted in Arrow (C++)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = pc.cast(values, pa.string())
    counted = pc.value_counts(values)
    names = counted.field("values").to_pylist()
    counts = np.asarray(counted.field("counts").to_numpy(zero_copy_only=False), dtype=np.int64)
    keep = [i for i, name in enumerate(names) if name is not None]
    return [names[i] for i in keep], counts[keep], int(values.null_count)


# --- The reference: bins fixed once ------------------------------------------------------------------------


def numeric_reference(values: np.ndarray) -> dict:
    """Bins of a numeric column: inner edges at the reference's quantiles (ties collapse), its range, its counts."""
    v = values[~np.isnan(values)]
    if not len(v):
        return {"kind": "numeric", "edges": [], "min": None, "max": None, "counts": [0], "n": 0,
                "missing": int(len(values))}
    quantiles = np.quantile(v, np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1])
    edges = np.unique(quantiles)
    return {"kind": "numeric", "edges": [float(e) for e in edges], "min": float(v.min()), "max": float(v.max()),
            "counts": numeric_counts(v, edges).tolist(), "n": int(len(v)), "missing": int(len(values) - len(v))}


def categorical_reference(values: np.ndarray) -> dict:
    present = values[values != None]  # noqa: E711  (elementwise on an object array)
    names, counts = np.unique(present.astype(str), return_counts=True) if len(present) else ([], [])
    order = np.argsort(-np.asarray(counts), kind="stable")
    categories = [str(names[i]) for i in order[:TOP_CATEGORIES]]
    complete = len(names) <= TOP_CATEGORIES  # every value seen is a bin: a new one is "out of range"
    return {"kind": "categorical", "categories": categories, "complete": complete,
            "counts": categorical_counts(present, categories).tolist(), "n": int(len(present)),
            "missing": int(len(values) - len(present))}


def reference_column(values) -> dict:
    """The reference entry for one column, numeric when most present values are numbers."""
    if _is_arrow(values):
        if _arrow_is_numeric(values):
            return numeric_reference(_arrow_floats(values))
        names, counts, missing = _arrow_value_counts(values)
        order = np.argsort(-counts, kind="stable")
        categories = [names[i] for i in order[:TOP_CATEGORIES]]
        return {"kind": "categorical", "categories": categories, "complete": len(names) <= TOP_CATEGORIES,
                "counts": _categorical_counts_of(names, counts, categories).tolist(), "n": int(counts.sum()),
                "missing": missing}
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf" or arr.dtype.kind == "b":
        return numeric_reference(arr.astype(np.float64))
    sample = arr[:2000]  # text columns are told apart on a sample: converting a million strings costs seconds
    present = int(np.count_nonzero(as_text(sample) != None))  # noqa: E711
    if present and np.count_nonzero(~np.isnan(as_float(sample))) >= 0.95 * present:
        numbers = as_float(arr)
        present = int(np.count_nonzero(as_text(arr) != None))  # noqa: E711
        if np.count_nonzero(~np.isnan(numbers)) >= 0.95 * present:
            return numeric_reference(numbers)
    return categorical_reference(as_text(arr))


# --- Counting a window into the reference's bins ---------------------------------------------------------------


def numeric_counts(values: np.ndarray, edges) -> np.ndarray:
    """Counts of (non-missing) values per bin: bin i holds edges[i-1] <= v < edges[i], open at both ends."""
    edges = np.asarray(edges, dtype=np.float64)
    index = np.searchsorted(edges, values, side="right")
    return np.bincount(index, minlength=len(edges) + 1)


def categorical_counts(values: np.ndarray, categories: list[str]) -> np.ndarray:
    """Counts of (non-missing, text) values per category, the last bin for every other value."""
    if len(values) < 50_000:  # pandas' set-up costs more than a dict lookup per value at rollup sizes
        index = {c: i for i, c in enumerate(categories)}
        other = len(categories)
        codes = np.fromiter((index.get(v, other) for v in values), dtype=np.int64, count=len(values))
        return np.bincount(codes, minlength=other + 1)
    import pandas as pd

    codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
    codes[codes < 0] = len(categories)
    return np.bincount(codes, minlength=len(categories) + 1)


def _categorical_counts_of(names: list[str], counts: np.ndarray, categories: list[str]) -> np.ndarray:
    """Distinct values with their counts folded into the reference's categories (the rest in "other")."""
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros(len(categories) + 1, dtype=np.int64)
    for name, n in zip(names, counts, strict=True):
        out[index.get(name, len(categories))] += n
    return out


def count_column(ref: dict, values) -> dict:
    """One window's statistics of a column in the reference's bins: rows, missing, out of range, counts."""
    if _is_arrow(values) and not (ref["kind"] == "numeric" and _arrow_is_numeric(values)):
        if ref["kind"] == "categorical":
            names, counts, missing = _arrow_value_counts(values)
            binned = _categorical_counts_of(names, counts, ref["categories"])
            return {"n": len(values), "missing": missing,
                    "out_of_range": int(binned[-1]) if ref.get("complete") else 0, "counts": binned.tolist()}
        values = values.to_numpy(zero_copy_only=False)
    if ref["kind"] == "numeric":
        numbers = as_float(values)
        present = numbers[~np.isnan(numbers)]
        out = 0
        if ref.get("min") is not None and len(present):
            out = int(np.count_nonzero((present < ref["min"]) | (present > ref["max"])))
        return {"n": int(len(numbers)), "missing": int(len(numbers) - len(present)), "out_of_range": out,
                "counts": numeric_counts(present, ref["edges"]).tolist()}
    text = as_text(values)
    present = text[text != None]  # noqa: E711
    counts = categorical_counts(present, ref["categories"])
    out = int(counts[-1]) if ref.get("complete") else 0
    return {"n": int(len(text)), "missing": int(len(text) - len(present)), "out_of_range": out,
            "counts": counts.tolist()}


# --- Comparing ------------------------------------------------------------------------------------------------


def _paired(counts: np.ndarray) -> np.ndarray:
    """Numeric bins merged pairwise (20 → 10), the resolution PSI's usual bands were set for."""
    if len(counts) % 2:
        counts = np.append(counts, 0)
    return counts.reshape(-1, 2).sum(axis=1)


def psi(reference_counts, current_counts) -> float | None:
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0 or len(ref) != len(cur):
        return None
    p = np.clip(ref / ref.sum(), _EPSILON, None)
    q = np.clip(cur / cur.sum(), _EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_rows(ref: dict, counts: np.ndarray) -> list[float]:
    """PSI of each row of a (windows × bins) count matrix against one reference, as compare() computes it."""
    ref_counts = np.asarray(ref["counts"], dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if ref["kind"] == "numeric":
        ref_counts = _paired(ref_counts)
        counts = np.stack([_paired(row) for row in counts]) if len(counts) else counts.reshape(0, len(ref_counts))
    totals = counts.sum(axis=1, keepdims=True)
    p = np.clip(ref_counts / ref_counts.sum(), _EPSILON, None)
    q = np.clip(np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0), _EPSILON, None)
    return [float(v) for v in np.sum((q - p) * np.log(q / p), axis=1)]


def ks_binned(reference_counts, current_counts) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov on binned data: the largest gap between the two CDFs at the bin edges
    (a lower bound of the exact statistic), with the asymptotic p-value for the effective sample size."""
    from scipy.special import kolmogorov

    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    n, m = ref.sum(), cur.sum()
    d = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    effective = math.sqrt(n * m / (n + m))
    return d, float(kolmogorov((effective + 0.12 + 0.11 / effective) * d))


def chi_square(reference_counts, current_counts) -> tuple[float, float]:
    """Pearson's chi-square test of homogeneity on the 2 × k table (bins empty in both dropped)."""
    from scipy.stats import chi2

    table = np.vstack([np.asarray(reference_counts, np.float64), np.asarray(current_counts, np.float64)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(chi2.sf(statistic, table.shape[1] - 1))


def verdict(psi_value: float | None, p_value: float | None, samples: int) -> str:
    if psi_value is None or samples < MIN_SAMPLES:
        return "too_few"
    if p_value is not None and p_value >= SIGNIFICANCE:
        return "stable"
    if psi_value >= PSI_HIGH:
        return "high"
    if psi_value >= PSI_MODERATE:
        return "moderate"
    return "stable"


VERDICT_WORDS = {"stable": "stable", "moderate": "moderate shift", "high": "high shift", "too_few": "too few rows"}


def compare(ref: dict, counts) -> dict:
    """Drift of one column: PSI, the test (KS for numeric, chi-square for categorical), the verdict."""
    ref_counts = np.asarray(ref["counts"], dtype=np.float64)
    cur = np.asarray(counts, dtype=np.float64)
    samples = int(cur.sum())
    if ref["kind"] == "numeric":
        value = psi(_paired(ref_counts), _paired(cur))
        statistic, p_value = ks_binned(ref_counts, cur) if samples and ref_counts.sum() else (None, None)
        test = "KS"
    else:
        value = psi(ref_counts, cur)
        statistic, p_value = chi_square(ref_counts, cur) if samples and ref_counts.sum() else (None, None)
        test = "chi-square"
    return {"kind": ref["kind"], "psi": value, "test": test, "statistic": statistic, "p_value": p_value,
            "verdict": verdict(value, p_value, samples), "samples": samples}


def bin_labels(ref: dict) -> list[str]:
    if ref["kind"] == "categorical":
        return [*ref["categories"], "other"]
    edges = ref["edges"]
    if not edges:
        return ["all"]
    fmt = _formatter(edges)
    return [f"< {fmt(edges[0])}",
            *(f"{fmt(a)} – {fmt(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True)),
            f"≥ {fmt(edges[-1])}"]


def _formatter(edges):
    span = max(abs(edges[-1]), abs(edges[0]), 1e-12)
    if span >= 1000:
        return lambda x: f"{x:,.0f}"
    if span >= 10:
        return lambda x: f"{x:,.1f}"
    return lambda x: f"{x:.3g}"


def shares(counts) -> list[float]:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    return (arr / total).tolist() if total else [0.0] * len(arr)


def drift_table(reference, current) -> dict[str, dict]:
    """Whole-table drift of raw columns: reference bins from `reference`, `current` counted into them and compared.

    Each side is a mapping of column name to values, or a pyarrow Table (its columns are then counted in Arrow,
    without making Python objects of its strings). What the rollups do in pieces, in one call; the benchmark
    times it against other tools."""
    names = reference.column_names if _is_arrow(reference) else list(reference)
    result = {}
    for name in names:
        ref = reference_column(reference[name])
        result[name] = compare(ref, count_column(ref, current[name])["counts"])
    return result
