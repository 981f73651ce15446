"""The scoring protocol's signature check: the fast numeric path must build exactly what the column-by-column
check builds, and leave every case it does not judge to it (so the messages stay exact)."""

from __future__ import annotations

import pandas as pd
import pytest

from apps.deployments.protocol import PayloadError, Schema, Table, parse

MIXED = [{"name": "age", "type": "long"}, {"name": "income", "type": "double"}, {"name": "score", "type": "float"},
         {"name": "visits", "type": "integer"}]


def both_paths(schema: Schema, table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    return schema.frame(table, max_rows=100), schema._checked_frame(table)


@pytest.mark.parametrize("rows", [[[30, 1.5, 0.25, 2]], [[30, 1, 2, 2], [41, 2.75, 0.5, 0]],
                                  [[2**40, -3.0, 1e-3, -7]]])
def test_the_fast_path_builds_the_same_frame(rows):
    schema = Schema(MIXED)
    fast, checked = both_paths(schema, Table([c["name"] for c in MIXED], rows))
    pd.testing.assert_frame_equal(fast, checked)
    assert list(fast.dtypes.astype(str)) == ["int64", "float64", "float32", "int32"]


def test_all_double_signatures_get_one_block():
    schema = Schema([{"name": f"f{i}", "type": "double"} for i in range(30)])
    frame = schema.frame(Table([f"f{i}" for i in range(30)], [[float(i) for i in range(30)]]), max_rows=10)
    assert frame.shape == (1, 30) and (frame.dtypes == "float64").all() and frame.iloc[0, 29] == 29.0


@pytest.mark.parametrize(("row", "field", "words"), [
    ([30, None, 0.5, 1], "income", "a value is required"),
    ([True, 1.0, 0.5, 1], "age", "not a whole number"),
    ([30.5, 1.0, 0.5, 1], "age", "not a whole number"),
    ([30, "1.0", 0.5, 1], "income", "not a number"),
])
def test_what_the_fast_path_refuses_gets_the_exact_message(row, field, words):
    with pytest.raises(PayloadError) as refused:
        Schema(MIXED).frame(Table([c["name"] for c in MIXED], [row]), max_rows=10)
    assert refused.value.field == field and words in refused.value.message


def test_optional_gaps_and_huge_integers_go_column_by_column():
    inputs = [{"name": "age", "type": "long"}, {"name": "income", "type": "double", "required": False}]
    frame = Schema(inputs).frame(Table(["age", "income"], [[2**60 + 1, None]]), max_rows=10)
    assert frame["age"].iloc[0] == 2**60 + 1 and pd.isna(frame["income"].iloc[0])


def test_columns_in_another_order_are_put_in_the_signatures_order():
    frame = Schema(MIXED).frame(Table(["income", "age", "visits", "score"], [[1.5, 30, 2, 0.25]]), max_rows=10)
    assert list(frame.columns) == ["age", "income", "score", "visits"] and frame["age"].iloc[0] == 30


def test_parse_then_check_a_pandas_split_body():
    frame = pd.DataFrame({"age": [30, 41], "income": [1.5, 2.0], "score": [0.5, 0.25], "visits": [1, 2]})
    body = ('{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}").encode()
    checked = Schema(MIXED).frame(parse(body, "application/json"), max_rows=10)
    assert checked["visits"].tolist() == [1, 2] and checked["income"].tolist() == [1.5, 2.0]
