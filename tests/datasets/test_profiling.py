"""Profiling: exact statistics against pandas, sampled shapes, duplicates, distinct values and warnings."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from apps.datasets import profiling
from apps.datasets.profiling import profile_batches
from apps.datasets.readers import iter_batches


def profile_csv(data: bytes, **kwargs) -> dict:
    batch_rows = kwargs.pop("batch_rows", 65_536)
    return profile_batches(iter_batches(io.BytesIO(data), "csv", batch_rows=batch_rows), **kwargs)


def column(profile: dict, name: str) -> dict:
    return next(c for c in profile["columns"] if c["name"] == name)


def messages(profile: dict) -> list[str]:
    return [w["message"] for w in profile["warnings"]]


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 5_000
    income = rng.lognormal(10, 0.5, n).round(2)
    income[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "age": rng.integers(-3, 90, n),
            "income": income,
            "segment": rng.choice(["gold", "silver", "bronze"], n, p=[0.2, 0.3, 0.5]),
            "joined": pd.date_range("2020-01-01", periods=n, freq="h"),
            "active": rng.random(n) < 0.25,
        }
    )


def csv_of(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def test_exact_statistics_match_pandas_across_batches(frame):
    profile = profile_csv(csv_of(frame), batch_rows=700)
    assert profile["row_count"] == len(frame)
    assert profile["column_count"] == 6
    for name in ("id", "age", "income"):
        expected = frame[name].describe()
        numeric = column(profile, name)["numeric"]
        assert numeric["min"] == pytest.approx(expected["min"])
        assert numeric["max"] == pytest.approx(expected["max"])
        assert numeric["mean"] == pytest.approx(expected["mean"], rel=1e-12)
        assert numeric["std"] == pytest.approx(expected["std"], rel=1e-9)
        assert column(profile, name)["missing"] == frame[name].isna().sum()
        # Fewer rows than the sample: quantiles are exact (linear interpolation, like pandas).
        assert numeric["quantiles"]["p50"] == pytest.approx(frame[name].median())
        assert numeric["quantiles"]["p25"] == pytest.approx(frame[name].quantile(0.25))
    assert column(profile, "income")["missing_pct"] == round(100 * frame["income"].isna().mean(), 2)


def test_types_and_distinct_counts(frame):
    profile = profile_csv(csv_of(frame))
    types = {c["name"]: c["type"] for c in profile["columns"]}
    assert types == {
        "id": "integer",
        "age": "integer",
        "income": "float",
        "segment": "categorical",
        "joined": "datetime",
        "active": "boolean",
    }
    for name in ("id", "age", "segment", "joined", "active", "income"):
        assert column(profile, name)["distinct"] == frame[name].nunique(), name
        assert column(profile, name)["distinct_is_exact"]
    assert column(profile, "joined")["datetime"] == {"min": "2020-01-01T00:00:00", "max": "2020-07-27T07:00:00"}
    assert column(profile, "id")["arrow_type"] == "int64"


def test_distinct_counts_beyond_the_cap_are_estimates(monkeypatch):
    monkeypatch.setattr(profiling.columns, "DISTINCT_EXACT", 1_000)
    monkeypatch.setattr(profiling.columns, "KMV_K", 256)
    values = np.random.default_rng(1).normal(size=20_000).round(6)
    data = ("x\n" + "\n".join(map(str, values)) + "\n").encode()
    info = column(profile_csv(data, batch_rows=3_000), "x")
    assert not info["distinct_is_exact"]
    assert info["distinct"] == pytest.approx(len(set(values)), rel=0.2)


def test_top_values_are_exact_and_ordered(frame):
    top = column(profile_csv(csv_of(frame), batch_rows=999), "segment")["top_values"]
    counts = frame["segment"].value_counts()
    assert top == [{"value": v, "count": int(c)} for v, c in counts.items()]
    assert column(profile_csv(csv_of(frame)), "active")["top_values"][0] == {
        "value": "false",
        "count": int((~frame["active"]).sum()),
    }


def test_histograms_sum_to_the_non_missing_count(frame):
    profile = profile_csv(csv_of(frame), batch_rows=1_000)
    for name in ("id", "age", "income", "joined"):
        info = column(profile, name)
        assert sum(info["histogram"]["counts"]) == len(frame) - info["missing"], name
    assert len(column(profile, "age")["histogram"]["edges"]) == len(column(profile, "age")["histogram"]["counts"]) + 1
    assert column(profile, "joined")["histogram"]["periods"][0] == "2020-01-01"


def test_histograms_from_a_sample_are_scaled_to_every_row(monkeypatch):
    monkeypatch.setattr(profiling.sampling, "SAMPLE_ROWS", 500)
    rows = "\n".join(str(i % 97) for i in range(10_000))
    profile = profile_csv(f"n\n{rows}\n".encode(), batch_rows=1_500)
    assert profile["sampled_rows"] == 500
    assert sum(column(profile, "n")["histogram"]["counts"]) == 10_000
    assert column(profile, "n")["numeric"]["mean"] == pytest.approx(np.mean([i % 97 for i in range(10_000)]))


def test_duplicate_rows_are_counted_exactly():
    data = b"a,b,c\n1,x,\n1,x,\n2,x,\n1,x,2.5\n2,x,\n1,x,\n3,y,1\n"
    profile = profile_csv(data, batch_rows=2)
    assert profile["duplicate_rows"] == 3
    assert "3 rows (43%) are exact copies of an earlier row" in messages(profile)


def test_no_duplicates_when_a_column_is_unique(frame):
    assert profile_csv(csv_of(frame))["duplicate_rows"] == 0


def test_correlations_on_numeric_columns_with_missing_values():
    x = np.arange(200, dtype=float)
    data = pd.DataFrame({"x": x, "double": 2 * x + 1, "minus": -x, "noise": np.sin(x)})
    data.loc[::7, "double"] = np.nan
    profile = profile_csv(csv_of(data))
    correlations = profile["correlations"]
    assert correlations["columns"] == ["x", "double", "minus", "noise"]
    matrix = correlations["matrix"]
    assert matrix[0][1] == 1.0 and matrix[0][2] == -1.0 and matrix[1][2] == -1.0
    assert matrix[0][3] == pytest.approx(data["x"].corr(data["noise"]), abs=1e-4)
    assert all(matrix[i][i] == 1.0 for i in range(4))


def test_warnings_in_plain_words():
    rows = []
    for i in range(40):
        income = "" if i % 5 < 2 else str(1000 + i)
        age = -1 if i == 3 else 20 + i % 30
        rows.append(f"{i},{age},{income},same,{['a', 'b'][i % 2]}")
    profile = profile_csv(("id,age,income,country,group\n" + "\n".join(rows) + "\n").encode())
    assert messages(profile) == [
        "`id` is unique: probably an identifier",
        "`age` has negative values (1 row)",
        "40% of `income` is missing",
        "`country` has a single value (same)",
    ]
    assert {w["column"] for w in profile["warnings"]} == {"id", "age", "income", "country"}


def test_personal_data_is_flagged_with_a_warning():
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Mary Shelley"] * 5
    data = "name,email,code\n" + "".join(
        f"{n},{n.split()[0].lower()}{i}@example.com,PRD-{i:04d}\n" for i, n in enumerate(names)
    )
    profile = profile_csv(data.encode())
    assert column(profile, "name")["pii"] == {"kind": "person_name", "share": 1.0, "confidence": "high", "by": "both"}
    assert column(profile, "email")["pii"]["kind"] == "email"
    assert column(profile, "code")["pii"] is None
    assert "`name` looks like personal data (person names): hidden from viewers" in messages(profile)


def test_formula_like_text_and_reader_notes_become_warnings():
    profile = profile_csv(b"id;note\n1;=cmd|' /C calc'!A0\n2;fine\n")
    kinds = [w["kind"] for w in profile["warnings"]]
    assert kinds[0] == "delimiter"
    formula = next(w for w in profile["warnings"] if w["kind"] == "formula")
    assert formula["column"] == "note" and "never runs them" in formula["message"]


def test_high_cardinality_text():
    rows = "".join(f"code-{i % 1500}\n" for i in range(4000))
    info = profile_csv(f"code\n{rows}".encode())
    assert column(info, "code")["type"] == "text"
    assert column(info, "code")["top_values"] is None
    assert "`code` has 1,500 different values: it is treated as free text, not as a category" in messages(info)


def test_not_finite_numbers_become_none_and_the_profile_is_json():
    table = pa.table({"x": [1.0, float("inf"), float("nan"), None], "empty": pa.nulls(4, pa.float64())})
    profile = profile_batches(table.to_batches())
    json.dumps(profile, allow_nan=False)
    x = column(profile, "x")
    assert x["missing"] == 2 and x["numeric"]["max"] == 1.0
    assert column(profile, "empty")["numeric"] is None
    assert "`empty` is empty: every value is missing" in messages(profile)
    assert "`x` has 1 infinite value; the statistics leave them out" in messages(profile)


def test_header_only_and_no_batches():
    profile = profile_csv(b"a,b\n")
    assert profile["row_count"] == 0 and [c["name"] for c in profile["columns"]] == ["a", "b"]
    assert column(profile, "a")["missing_pct"] == 0.0
    assert profile_batches([])["columns"] == []


def test_progress_and_sink(frame):
    seen, progress = [], []
    data = csv_of(frame)
    profile = profile_csv(data, batch_rows=500, sink=seen.append, progress=lambda p, m: progress.append((p, m)))
    assert sum(b.num_rows for b in seen) == profile["row_count"] == len(frame)
    assert pa.Table.from_batches(seen).column("id").to_pylist() == list(range(len(frame)))
    assert progress[-1] == (99, "Summarising the profile")
    percents = [p for p, _ in progress]
    assert percents == sorted(percents) and all(0 <= p <= 99 for p in percents)


def test_std_is_numerically_stable():
    base = 1e9
    values = base + np.array([4.0, 7.0, 13.0, 16.0] * 250)
    table = pa.table({"x": values})
    info = column(profile_batches(table.to_batches(max_chunksize=3)), "x")["numeric"]
    assert info["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9)
    assert math.isclose(info["mean"], values.mean())


def _batches(table: pa.Table, rows: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=rows)


@pytest.mark.parametrize("span", [1 << 22, 3_000])  # a bitmap all along; a bitmap given up half way
def test_integer_distinct_counts_are_exact_across_batches(monkeypatch, span):
    monkeypatch.setattr(profiling.columns, "BITMAP_SPAN", span)
    rng = np.random.default_rng(5)
    # Batches that move the range down and up, repeat earlier values, and have more than TRACKED_VALUES values.
    values = np.concatenate(
        [rng.integers(5_000, 6_500, 2_000), rng.integers(-1_000, 5_000, 2_000), rng.integers(0, 9_000, 2_000)]
    )
    ids = rng.permutation(len(values)) - 2_000
    profile = profile_batches(_batches(pa.table({"x": values, "id": ids}), 2_000))
    assert column(profile, "x")["distinct"] == len(np.unique(values))
    assert column(profile, "x")["distinct_is_exact"]
    assert column(profile, "id")["distinct"] == len(ids) and column(profile, "id")["distinct_is_exact"]
    assert "`id` is unique: probably an identifier" in messages(profile)
    assert "`x` is unique: probably an identifier" not in messages(profile)
    assert profile["duplicate_rows"] == 0


def test_a_repeat_after_the_bitmap_is_given_up_is_not_unique(monkeypatch):
    monkeypatch.setattr(profiling.columns, "BITMAP_SPAN", 5_000)
    values = np.concatenate([np.arange(3_000), np.arange(3_000, 9_000), [17]])
    profile = profile_batches(_batches(pa.table({"x": values}), 3_000))
    assert column(profile, "x")["distinct"] == 9_000
    assert not any("identifier" in m for m in messages(profile))
    assert profile["duplicate_rows"] == 1


def test_distinct_days_and_times_across_batches():
    rng = np.random.default_rng(8)
    days = np.datetime64("1960-01-01") + rng.integers(0, 30_000, 9_000).astype("timedelta64[D]")
    stamps = days.astype("datetime64[s]")
    later = stamps.copy()
    later[7_000:] += rng.integers(0, 86_400, 2_000).astype("timedelta64[s]")  # no longer whole days
    table = pa.table({"date": pa.array(days), "midnight": pa.array(stamps), "time": pa.array(later)})
    profile = profile_batches(_batches(table, 2_500))
    for name, values in (("date", days), ("midnight", stamps), ("time", later)):
        assert column(profile, name)["distinct"] == len(np.unique(values)), name
        assert column(profile, name)["distinct_is_exact"]
    assert column(profile, "date")["datetime"]["min"] == str(days.min()) + "T00:00:00"


def test_duplicate_rows_across_batches_with_different_dictionaries():
    rng = np.random.default_rng(11)
    n = 6_000
    small = rng.choice(["a", "bb", "ccc", None], n)  # each batch's dictionary has its own order
    wide = np.array([f"value-{i}" for i in rng.integers(0, 2_500, n)], dtype=object)  # many distinct values
    wide[rng.random(n) < 0.1] = None
    long = np.array(["x" * 70 + str(i % 40) for i in range(n)], dtype=object)  # over 64 bytes
    number = rng.integers(0, 3, n)
    frame = pd.DataFrame({"small": small, "wide": wide, "long": long, "number": number})
    frame = pd.concat([frame, frame.sample(1_500, random_state=2)], ignore_index=True)  # copies in later batches
    table = pa.Table.from_pandas(frame, preserve_index=False)
    expected = int(frame.astype(str).duplicated().sum())
    assert expected >= 1_500
    for rows in (700, 2_048, 8_000):
        profile = profile_batches(_batches(table, rows))
        assert profile["duplicate_rows"] == expected, rows
        assert column(profile, "wide")["distinct"] == frame["wide"].nunique()
        assert column(profile, "long")["distinct"] == 40
        assert column(profile, "small")["top_values"] == [
            {"value": v, "count": int(c)} for v, c in frame["small"].value_counts().items()
        ]
