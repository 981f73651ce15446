"""The data grid: pagination, sorting, filters and hidden columns over a Parquet file read through an opener."""

from __future__ import annotations

import io
import json
import math
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apps.datasets import grid
from apps.datasets.grid import GridQueryError, read_page


@pytest.fixture(autouse=True)
def _empty_grid_cache():
    grid.clear_cache()
    yield
    grid.clear_cache()


def parquet_bytes(table: pa.Table, *, row_group_size: int | None = None) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=row_group_size)
    return sink.getvalue()


class Opener:
    """Hands out a fresh BytesIO (no path, no fileno) of the file each call, and counts the calls."""

    def __init__(self, data: bytes):
        self.data = data
        self.calls = 0

    def __call__(self) -> io.BytesIO:
        self.calls += 1
        return io.BytesIO(self.data)


def grid_of(table: pa.Table, **kwargs) -> Opener:
    return Opener(parquet_bytes(table, **kwargs))


def page_of(table_or_opener, key: str = "v1", **kwargs) -> grid.GridPage:
    opener = table_or_opener if isinstance(table_or_opener, Opener) else grid_of(table_or_opener)
    return read_page(key, opener, **kwargs)


PEOPLE = pa.table({
    "id": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int64()),
    "name": ["Alice", "bob", "Chloé", None, "alicia", "Bob", "", "  "],
    "age": pa.array([34, None, 27, 45, 27, 19, None, 60], pa.int32()),
    "income": [52000.5, 31000.0, float("nan"), None, 75000.25, 31000.0, 18000.0, 99000.0],
    "joined": pa.array([date(2023, 1, 15), date(2023, 2, 1), date(2024, 2, 29), None, date(2022, 12, 31),
                        date(2023, 1, 31), date(2024, 3, 1), date(2021, 6, 6)], pa.date32()),
    "seen": pa.array([datetime(2024, 3, 1, 9, 30), datetime(2024, 3, 1, 23, 59, 59), None,
                      datetime(2024, 2, 29, 12, 0), datetime(2024, 3, 2, 0, 0), datetime(2023, 7, 1, 8, 15, 30),
                      datetime(2024, 3, 1, 0, 0), datetime(2024, 3, 1, 9, 30, 0, 500)], pa.timestamp("us")),
    "active": [True, False, None, True, True, False, True, None],
    "email": ["a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org", "f@x.org", "g@x.org", "h@x.org"],
})


def ids(page: grid.GridPage) -> list[int]:
    position = page.columns.index("id")
    return [row[position] for row in page.rows]


def filtered(column: str, text: str, **kwargs) -> list[int]:
    return ids(page_of(PEOPLE, filters={column: text}, **kwargs))


# --- Pagination -----------------------------------------------------------------------------------------------


def test_pages_count_the_rows_and_the_last_page_holds_the_rest():
    table = pa.table({"n": list(range(23))})
    first = page_of(table, page_size=5)
    assert (first.total, first.pages, first.page, first.page_size) == (23, 5, 1, 5)
    assert first.columns == ["n"]
    assert first.rows == [[0], [1], [2], [3], [4]]
    assert page_of(table, page=5, page_size=5).rows == [[20], [21], [22]]


def test_a_page_past_the_end_is_empty_with_the_true_total():
    beyond = page_of(pa.table({"n": list(range(23))}), page=7, page_size=5)
    assert (beyond.rows, beyond.total, beyond.pages, beyond.page) == ([], 23, 5, 7)


def test_page_size_is_capped():
    page = page_of(pa.table({"n": list(range(1200))}), page=2, page_size=10_000)
    assert page.page_size == grid.MAX_PAGE_SIZE == 500
    assert len(page.rows) == 500 and page.rows[0] == [500]
    assert page.pages == 3


@pytest.mark.parametrize("arguments", [{"page": 0}, {"page": -1}, {"page_size": 0}, {"page": "2"}])
def test_rejects_pages_that_are_not_positive_whole_numbers(arguments):
    with pytest.raises(GridQueryError, match="page"):
        page_of(PEOPLE, **arguments)


def test_an_empty_file_has_one_empty_page():
    page = page_of(pa.table({"n": pa.array([], pa.int64()), "s": pa.array([], pa.string())}),
                   sort="s", filters={"n": ">1"})
    assert (page.rows, page.total, page.pages, page.columns) == ([], 0, 1, ["n", "s"])


def test_reads_files_of_several_row_groups():
    table = pa.table({"n": list(range(1000)), "s": [f"v{i % 7}" for i in range(1000)]})
    opener = grid_of(table, row_group_size=64)
    page = read_page("chunks", opener, page=3, page_size=100, sort="n", descending=True, filters={"s": "v3"})
    expected = [i for i in range(999, -1, -1) if i % 7 == 3]
    assert [row[0] for row in page.rows] == expected[200:300]
    assert page.total == len(expected)


# --- Sorting --------------------------------------------------------------------------------------------------


def test_sorts_numbers_both_ways_with_empty_cells_last():
    assert ids(page_of(PEOPLE, sort="age")) == [6, 3, 5, 1, 4, 8, 2, 7]
    assert ids(page_of(PEOPLE, sort="age", descending=True)) == [8, 4, 1, 3, 5, 6, 2, 7]
    # NaN counts as empty, like null.
    assert ids(page_of(PEOPLE, sort="income")) == [7, 2, 6, 1, 5, 8, 3, 4]
    assert ids(page_of(PEOPLE, sort="income", descending=True)) == [8, 5, 1, 2, 6, 7, 3, 4]


def test_ties_keep_file_order_in_both_directions():
    # age 27 (rows 3 and 5) and income 31000 (rows 2 and 6) stay in file order either way.
    assert ids(page_of(PEOPLE, sort="age", descending=True))[3:5] == [3, 5]
    assert ids(page_of(PEOPLE, sort="income", descending=True))[3:5] == [2, 6]


def test_sorts_text_dates_times_and_booleans():
    assert ids(page_of(PEOPLE, sort="name")) == [7, 8, 1, 6, 3, 5, 2, 4]  # byte order: "" < " " < "A" < "a"
    assert ids(page_of(PEOPLE, sort="name", descending=True)) == [2, 5, 3, 6, 1, 8, 7, 4]
    assert ids(page_of(PEOPLE, sort="joined")) == [8, 5, 1, 6, 2, 3, 7, 4]
    assert ids(page_of(PEOPLE, sort="seen", descending=True)) == [5, 2, 8, 1, 7, 4, 6, 3]
    assert ids(page_of(PEOPLE, sort="active")) == [2, 6, 1, 4, 5, 7, 3, 8]


def reference_order(values: list, *, descending: bool) -> list[int]:
    def empty(v):
        return v is None or (isinstance(v, float) and math.isnan(v))

    present = [i for i, v in enumerate(values) if not empty(v)]
    return sorted(present, key=lambda i: values[i], reverse=descending) + [i for i, v in enumerate(values) if empty(v)]


def random_table(n: int, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = ["customer-", "customer-x", "Zebra", "zebra", "élan", "éclair", "b", "", "a\u00e9", "aé b"]

    def with_nulls(values, share=0.1):
        return [None if rng.random() < share else v for v in values]

    return pa.table({
        "row": pa.array(range(n), pa.int64()),
        "few": pa.array(with_nulls(rng.integers(-3, 4, n).tolist()), pa.int64()),
        "big": pa.array(rng.integers(-2**62, 2**62, n).tolist(), pa.int64()),
        "small": pa.array(with_nulls(rng.integers(0, 5, n).tolist()), pa.uint8()),
        "real": pa.array(with_nulls([float(x) if rng.random() > 0.05 else float("nan")
                                     for x in rng.normal(0, 1, n).round(1)])),
        "category": pa.array(with_nulls([f"cat {k}" for k in rng.integers(0, 6, n)])),
        # Many distinct long texts that share 8-byte prefixes: sorted by prefix keys, ties by full text.
        "text": pa.array(with_nulls([words[k] + str(m) for k, m in zip(rng.integers(0, len(words), n),
                                                                       rng.integers(0, 10**6, n), strict=True)])),
        "day": pa.array(with_nulls([date(2020, 1, 1) + (date(2020, 1, 2) - date(2020, 1, 1)) * int(k)
                                    for k in rng.integers(0, 40, n)]), pa.date32()),
        "flag": pa.array(with_nulls((rng.random(n) < 0.5).tolist())),
    })


RANDOM = random_table(1500)


@pytest.mark.parametrize("column", ["few", "big", "small", "real", "category", "text", "day", "flag"])
@pytest.mark.parametrize("descending", [False, True])
def test_every_page_of_a_sort_matches_a_full_stable_sort(column, descending):
    opener = grid_of(RANDOM, row_group_size=400)
    expected = reference_order(RANDOM.column(column).to_pylist(), descending=descending)
    for page_size in (37, 500):
        got = []
        for page in range(1, math.ceil(len(expected) / page_size) + 1):
            result = read_page("random", opener, page=page, page_size=page_size, sort=column, descending=descending)
            got += [row[0] for row in result.rows]
        assert got == expected


@pytest.mark.parametrize("descending", [False, True])
def test_sorted_pages_of_filtered_rows_match_a_full_sort(descending):
    opener = grid_of(RANDOM)
    rows = RANDOM.to_pylist()
    keep = [r for r in rows if (r["category"] is None or "cat 1" not in r["category"])
            and r["few"] is not None and r["few"] >= 0]
    expected = [keep[i]["row"] for i in reference_order([r["text"] for r in keep], descending=descending)]
    got = []
    for page in range(1, 20):
        result = read_page("random", opener, page=page, page_size=40, sort="text", descending=descending,
                           filters={"category": "!cat 1", "few": ">=0"})
        assert result.total == len(expected)
        got += [row[0] for row in result.rows]
    assert got == expected


def test_sorts_and_filters_large_strings():
    values = ["pear", None, "Apple", "apricot", "péché", "banana"]
    table = pa.table({"row": range(6), "fruit": pa.array(values, pa.large_string())})
    assert [r[0] for r in page_of(table, sort="fruit").rows] == reference_order(values, descending=False)
    assert [r[0] for r in page_of(table, filters={"fruit": "AP"}).rows] == [2, 3]


def test_texts_alike_beyond_their_prefix_are_ranked_once(monkeypatch):
    monkeypatch.setattr(grid.sorting, "_MAX_PREFIX_TIES", 10)
    values = [f"same-long-prefix {i * 7919 % 1000:04d}" for i in range(1000)]
    table = pa.table({"row": range(1000), "text": values})
    expected = reference_order(values, descending=True)
    got = [row[0] for page in (1, 2, 3) for row in page_of(table, page=page, page_size=300, sort="text",
                                                              descending=True).rows]
    assert got == expected[:900]


def test_rejects_sorting_by_an_unknown_column():
    with pytest.raises(GridQueryError, match="Unknown column “salary”"):
        page_of(PEOPLE, sort="salary")


def test_rejects_sorting_by_values_without_an_order():
    table = pa.table({"tags": pa.array([["a"], ["b", "c"]])})
    with pytest.raises(GridQueryError, match="“tags” cannot be sorted"):
        page_of(table, sort="tags")


# --- Filters --------------------------------------------------------------------------------------------------


def test_text_filters():
    assert filtered("name", "ali") == [1, 5]  # contains, ignoring case
    assert filtered("name", "BOB") == [2, 6]
    assert filtered("name", "CHLOÉ") == [3]
    assert filtered("name", "=bob") == [2]  # exact
    assert filtered("name", "!bo") == [1, 3, 4, 5, 7, 8]  # not contains: empty cells too
    assert filtered("name", "!=bob") == [1, 3, 4, 5, 6, 7, 8]
    assert filtered("name", "is:empty") == [4, 7, 8]  # null, "" and blanks
    assert filtered("name", "IS:NOTEMPTY") == [1, 2, 3, 5, 6]


def test_text_filters_on_a_categorical_column_match_the_plain_path():
    rows = RANDOM.to_pylist()
    for text, keep in [("CAT 2", lambda v: v is not None and "cat 2" in v), ("=cat 3", lambda v: v == "cat 3"),
                       ("!2", lambda v: v is None or "2" not in v), ("is:empty", lambda v: v is None)]:
        for column in ("category", "text"):
            expected = [r["row"] for r in rows if keep(r[column])]
            page = page_of(RANDOM, filters={column: text}, page_size=500)
            assert page.total == len(expected), (column, text)
            assert [row[0] for row in page.rows] == expected[:500]


def test_a_backslash_makes_an_operator_plain_text():
    table = pa.table({"id": [1, 2, 3], "note": [">5 years", "5 years", "=x"]})
    assert ids(page_of(table, filters={"note": "\\>5"})) == [1]
    assert ids(page_of(table, filters={"note": "\\=x"})) == [3]


def test_rejects_comparisons_on_text():
    with pytest.raises(GridQueryError, match="“name” holds text"):
        filtered("name", ">b")


def test_integer_filters():
    assert filtered("age", "27") == [3, 5]
    assert filtered("age", "=27") == [3, 5]
    assert filtered("age", ">34") == [4, 8]
    assert filtered("age", ">=34") == [1, 4, 8]
    assert filtered("age", "<27") == [6]
    assert filtered("age", "<= 27") == [3, 5, 6]
    assert filtered("age", "!27") == [1, 2, 4, 6, 7, 8]  # empty cells included
    assert filtered("age", "is:empty") == [2, 7]
    assert filtered("age", "is:notempty") == [1, 3, 4, 5, 6, 8]


def test_integer_filters_keep_64_bit_precision():
    table = pa.table({"id": [1, 2], "n": pa.array([2**62, 2**62 + 1], pa.int64())})
    assert ids(page_of(table, filters={"n": str(2**62 + 1)})) == [2]


def test_float_filters():
    assert filtered("income", "31000") == [2, 6]
    assert filtered("income", ">52000.5") == [5, 8]
    assert filtered("income", ">=52000.5") == [1, 5, 8]
    assert filtered("income", "<3.1e4") == [7]
    assert filtered("income", "<=31000") == [2, 6, 7]
    assert filtered("income", "!31000") == [1, 3, 4, 5, 7, 8]
    assert filtered("income", "is:empty") == [3, 4]  # NaN and null


@pytest.mark.parametrize("text", ["abc", ">ten", "=", "nan", "1,000"])
def test_rejects_a_number_filter_that_is_not_a_number(text):
    with pytest.raises(GridQueryError, match="“income”"):
        filtered("income", text)


def test_date_filters_cover_the_period_written():
    assert filtered("joined", "2023-01-15") == [1]
    assert filtered("joined", "2023-01") == [1, 6]
    assert filtered("joined", "=2024") == [3, 7]
    assert filtered("joined", ">2023-01") == [2, 3, 7]  # after January 2023
    assert filtered("joined", ">=2023-01") == [1, 2, 3, 6, 7]
    assert filtered("joined", "<2023") == [5, 8]
    assert filtered("joined", "<=2023-01-31") == [1, 5, 6, 8]
    assert filtered("joined", "!2023") == [3, 4, 5, 7, 8]
    assert filtered("joined", "is:empty") == [4]


def test_timestamp_filters_cover_the_period_written():
    assert filtered("seen", "2024-03-01") == [1, 2, 7, 8]
    assert filtered("seen", "2024-03-01T09:30") == [1, 8]
    assert filtered("seen", "2024-03-01 09:30:00") == [1, 8]
    assert filtered("seen", "=2024-03-01T09:30:00.000500") == [8]
    assert filtered("seen", ">2024-03-01T09:30") == [2, 5]
    assert filtered("seen", "<2024-03") == [4, 6]
    assert filtered("seen", ">=2024-03-01T10:00+01:00") == [1, 2, 5, 8]  # 09:00 UTC
    assert filtered("seen", ">=2024-03-01T10:00-01:00") == [2, 5]  # 11:00 UTC
    assert filtered("seen", "<2024-03-01T00:00:00Z") == [4, 6]


@pytest.mark.parametrize("text", ["yesterday", "2024-13", "2024-02-30", ">03/01/2024"])
def test_rejects_a_date_filter_that_is_not_a_date(text):
    with pytest.raises(GridQueryError, match="“joined” holds dates"):
        filtered("joined", text)


def test_boolean_filters():
    assert filtered("active", "true") == [1, 4, 5, 7]
    assert filtered("active", "=No") == [2, 6]
    assert filtered("active", "1") == [1, 4, 5, 7]
    assert filtered("active", "!true") == [2, 3, 6, 8]
    assert filtered("active", "is:empty") == [3, 8]
    with pytest.raises(GridQueryError, match="“active” holds true/false"):
        filtered("active", ">true")
    with pytest.raises(GridQueryError, match="“active” holds true/false"):
        filtered("active", "maybe")


def test_other_types_filter_only_on_emptiness():
    table = pa.table({"id": [1, 2], "tags": pa.array([["a"], None])})
    assert ids(page_of(table, filters={"tags": "is:empty"})) == [2]
    with pytest.raises(GridQueryError, match="“tags”"):
        page_of(table, filters={"tags": "a"})


def test_an_operator_without_a_value_is_rejected():
    with pytest.raises(GridQueryError, match="nothing after “>=”"):
        filtered("age", ">= ")


def test_blank_filters_are_ignored():
    assert page_of(PEOPLE, filters={"name": "  ", "age": ""}).total == 8


def test_filters_combine_and_sort():
    page = page_of(PEOPLE, filters={"income": ">=31000", "name": "b"}, sort="income", descending=True)
    assert ids(page) == [2, 6]
    assert page.total == 2
    assert ids(page_of(PEOPLE, filters={"joined": ">=2023", "active": "yes", "age": "is:notempty"})) == [1]


def test_filtered_pagination_counts_matching_rows():
    table = pa.table({"n": list(range(100))})
    page = page_of(table, filters={"n": ">=37"}, page=2, page_size=10)
    assert (page.total, page.pages, page.rows[0]) == (63, 7, [47])


def test_rejects_filtering_on_an_unknown_column():
    with pytest.raises(GridQueryError, match="Unknown column “salary”"):
        page_of(PEOPLE, filters={"salary": ">1"})


# --- Hidden columns -------------------------------------------------------------------------------------------


def test_hidden_columns_are_never_returned():
    page = page_of(PEOPLE, hidden_columns={"email", "name"})
    assert page.columns == ["id", "age", "income", "joined", "seen", "active"]
    assert all(len(row) == 6 for row in page.rows)
    assert not any("a@x.org" in row for row in page.rows)


def test_hidden_columns_answer_like_columns_that_do_not_exist():
    opener = grid_of(PEOPLE)
    messages = []
    for column in ("email", "no_such_column"):
        for arguments in ({"sort": column}, {"filters": {column: "x"}}):
            with pytest.raises(GridQueryError) as raised:
                read_page("v1", opener, hidden_columns={"email"}, **arguments)
            messages.append(str(raised.value).replace(column, "?"))
    assert messages[:2] == messages[2:]
    assert "Unknown column" in messages[0]


def test_hidden_columns_vary_per_request_on_the_same_cached_version():
    opener = grid_of(PEOPLE)
    assert "email" not in read_page("v1", opener, hidden_columns=["email"], sort="id").columns
    assert "email" in read_page("v1", opener, sort="id").columns
    assert opener.calls == 1
    assert "email" not in read_page("v2", opener, hidden_columns=["email"]).columns  # from the row groups


# --- Values, openers and the cache ----------------------------------------------------------------------------


def test_rows_are_strict_json():
    table = pa.table({
        "when": pa.array([datetime(2024, 3, 1, 9, 30), None], pa.timestamp("ns")),
        "utc": pa.array([datetime(2024, 3, 1, 9, 30), None], pa.timestamp("s", tz="UTC")),
        "day": pa.array([date(2024, 3, 1), None]),
        "x": [float("nan"), float("inf")],
        "price": pa.array([Decimal("1.10"), None], pa.decimal128(5, 2)),
        "blob": [b"\x00ab", None],
    })
    page = page_of(table, filters={"price": ">1"})
    assert page.rows == [["2024-03-01T09:30:00", "2024-03-01T09:30:00+00:00", "2024-03-01", None, "1.10",
                          "\x00ab"]]
    assert json.loads(json.dumps(page_of(table).rows, allow_nan=False))[1] == [None, None, None, "Infinity", None,
                                                                             None]


def test_reads_dictionary_encoded_columns_like_plain_ones():
    table = pa.table({"id": [1, 2, 3], "segment": pa.array(["gold", "silver", "gold"]).dictionary_encode()})
    page = page_of(table, filters={"segment": "GOLD"}, sort="segment")
    assert page.rows == [[1, "gold"], [3, "gold"]]


def test_reads_through_a_file_object_without_a_path():
    opener = grid_of(PEOPLE)
    handle = opener()
    assert not hasattr(handle, "name")
    with pytest.raises(io.UnsupportedOperation):
        handle.fileno()
    assert page_of(opener).total == 8


def test_the_file_is_read_once_per_version():
    opener = grid_of(PEOPLE)
    read_page("v1", opener, sort="id")
    read_page("v1", opener, page=2, page_size=3, sort="name", filters={"age": ">20"})
    read_page("v1", opener)
    assert opener.calls == 1
    read_page("v2", opener, filters={"age": ">20"})
    assert opener.calls == 2


def test_a_plain_first_page_is_read_from_its_row_groups_while_the_version_loads():
    table = pa.table({"n": list(range(1000)), "s": [f"v{i % 7}" for i in range(1000)]})
    data = parquet_bytes(table, row_group_size=64)
    loaded = {}
    for page in (1, 2, 7, 10, 11):  # the first, within a group, across groups, the last (partial), past the end
        grid.clear_cache()
        cold = read_page("k", Opener(data), page=page, page_size=100, hidden_columns=["s"])
        grid.wait_for_warming()
        assert grid.cache.is_cached("k"), "the whole version was loaded in the background"
        warm = read_page("k", Opener(data), page=page, page_size=100, hidden_columns=["s"])
        assert cold == warm
        loaded[page] = [row[0] for row in cold.rows]
    assert loaded[1] == list(range(100)) and loaded[7] == list(range(600, 700))
    assert loaded[10] == list(range(900, 1000)) and loaded[11] == []


def test_a_plain_page_does_not_wait_for_a_slow_load():
    import threading

    data, gate = parquet_bytes(pa.table({"n": list(range(1000))}), row_group_size=100), threading.Event()
    calls = []

    def opener():  # the background load is stuck until the gate opens; the page request is not
        calls.append(1)
        if threading.current_thread().name.startswith("grid-warm"):
            gate.wait(10)
        return io.BytesIO(data)

    page = read_page("slow", opener, page=3, page_size=50)
    assert [row[0] for row in page.rows][:2] == [100, 101] and not grid.cache.is_cached("slow")
    gate.set()
    grid.wait_for_warming()
    assert grid.cache.is_cached("slow") and len(calls) == 2


def test_the_least_recently_used_version_is_dropped_first():
    openers = {f"v{i}": grid_of(PEOPLE) for i in range(grid.CACHE_ENTRIES + 1)}
    for key in list(openers)[:-1]:
        read_page(key, openers[key], sort="id")
    read_page("v0", openers["v0"], sort="id")  # v0 is now the most recent; v1 the least
    read_page(f"v{grid.CACHE_ENTRIES}", openers[f"v{grid.CACHE_ENTRIES}"], sort="id")
    read_page("v0", openers["v0"], sort="id")
    read_page("v1", openers["v1"], sort="id")
    assert openers["v0"].calls == 1
    assert openers["v1"].calls == 2


def test_the_opened_file_is_closed():
    handles = []

    def opener():
        handles.append(io.BytesIO(parquet_bytes(PEOPLE)))
        return handles[-1]

    read_page("v1", opener)
    grid.wait_for_warming()  # the first plain page also starts loading the whole version in the background
    assert handles and all(handle.closed for handle in handles)


def test_warming_loads_once_and_a_concurrent_request_waits_for_it():
    import threading

    from apps.datasets import grid

    grid.clear_cache()
    buffer = io.BytesIO()
    pq.write_table(pa.table({"n": list(range(1000))}), buffer)
    opened, gate = [], threading.Event()

    def opener():
        opened.append(1)
        gate.wait(5)
        return io.BytesIO(buffer.getvalue())

    grid.warm("warm-key", opener)
    result = {}
    reader = threading.Thread(target=lambda: result.update(page=grid.read_page("warm-key", opener, page=2, sort="n")))
    reader.start()
    gate.set()
    reader.join(10)
    assert result["page"].total == 1000 and result["page"].rows[0] == [50]
    assert len(opened) == 1, "the warm-up and the request share one read"
    grid.warm("warm-key", opener)
    assert len(opened) == 1, "a cached version is not read again"
