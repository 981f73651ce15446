"""Reading uploaded files: formats, types (including a type that changes late in the file) and bad input."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apps.datasets import readers
from apps.datasets.readers import MAX_COLUMNS, DataFileError, detect_format, iter_batches, read_batches


def collect(batches) -> pa.Table:
    batches = list(batches)
    assert batches, "there is always at least one batch"
    assert len({b.schema for b in batches}) == 1
    return pa.Table.from_batches(batches)


def read(data: bytes, fmt: str = "csv", *, batch_rows: int = 65_536) -> pa.Table:
    """The file read both ways: `iter_batches` (two passes for CSV) and `read_batches` (one pass when it can);
    both must give the same rows, types and warnings, or the same error."""
    try:
        table = collect(iter_batches(io.BytesIO(data), fmt, batch_rows=batch_rows))
    except DataFileError as exc:
        with pytest.raises(DataFileError) as caught:
            read_batches(io.BytesIO(data), fmt, collect, batch_rows=batch_rows)
        assert str(caught.value) == str(exc)
        raise
    single = read_batches(io.BytesIO(data), fmt, collect, batch_rows=batch_rows)
    assert single.schema.equals(table.schema, check_metadata=False)
    assert single.equals(table)
    assert warnings_of(single) == warnings_of(table)
    return table


def warnings_of(table: pa.Table) -> list[dict]:
    return json.loads(table.schema.metadata[readers.WARNINGS_KEY])


def refused(data: bytes, fmt: str = "csv") -> str:
    with pytest.raises(DataFileError) as caught:
        read(data, fmt)
    return str(caught.value)


@pytest.fixture(params=["memory", "disk"])
def small_chunks(monkeypatch, request):
    """Chunks of a few hundred bytes, so that small files take the multi-chunk path (two passes, a thread).

    Parsed columns wait between the passes in memory, or in a temporary file.
    """
    monkeypatch.setattr(readers.csv_plan, "CHUNK_BYTES", 256)
    monkeypatch.setattr(readers.csv_plan, "HEAD_BYTES", 64)
    if request.param == "disk":
        monkeypatch.setattr(readers.csv_read, "CSV_SPOOL_MEMORY_BYTES", 0)


class Unseekable(io.RawIOBase):
    def __init__(self, data: bytes):
        self.inner = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        return self.inner.readinto(b)


# --- detect_format --------------------------------------------------------------------------------------


def test_detects_formats_by_extension_and_content():
    assert detect_format("people.csv", b"a,b\n1,2\n") == "csv"
    assert detect_format("people.TSV", b"a\tb\n") == "tsv"
    assert detect_format("rows.parquet", b"PAR1\x15\x04") == "parquet"
    assert detect_format("book.xlsx", b"PK\x03\x04\x14\x00") == "xlsx"


def test_refuses_a_binary_file_renamed_csv():
    message = str(pytest.raises(DataFileError, detect_format, "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00").value)
    assert "contains a PNG image, not text" in message
    nul = str(pytest.raises(DataFileError, detect_format, "x.csv", b"a,b\x00\x01\x02\x00\x00\x03").value)
    assert "binary data" in nul


def test_says_what_a_renamed_file_really_is():
    assert "Rename it to .parquet" in str(pytest.raises(DataFileError, detect_format, "d.csv", b"PAR1abc").value)
    assert "is not a Parquet file" in str(pytest.raises(DataFileError, detect_format, "d.parquet", b"a,b\n").value)
    assert "not an Excel workbook" in str(pytest.raises(DataFileError, detect_format, "d.xlsx", b"a,b\n").value)
    old_excel = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    assert "old-style Excel" in str(pytest.raises(DataFileError, detect_format, "d.xlsx", old_excel).value)
    assert ".xls) are not supported" in str(pytest.raises(DataFileError, detect_format, "d.xls", old_excel).value)


def test_refuses_unsupported_extensions_and_empty_files():
    assert "Upload a .csv, .tsv, .parquet or .xlsx file" in str(
        pytest.raises(DataFileError, detect_format, "notes.docx", b"PK").value
    )
    assert str(pytest.raises(DataFileError, detect_format, "a.csv", b"").value) == "The file is empty."


# --- CSV: bad input -------------------------------------------------------------------------------------


def test_empty_file():
    assert refused(b"") == "The file is empty."
    assert refused(b"  \r\n\n") == "The file is empty."


def test_header_only_gives_zero_rows_with_the_columns():
    table = read(b"id,name,amount\n")
    assert table.num_rows == 0
    assert table.column_names == ["id", "name", "amount"]
    assert table.schema.metadata[readers.ROWS_KEY] == b"0"


def test_ragged_row_is_named_by_its_line():
    message = refused(b"a,b,c\n1,2,3\n4,5,6\n7,8,9,10\n11,12,13\n")
    assert message.startswith("Line 4 has 4 values but the header has 3 columns: “7,8,9,10”.")
    assert "missing or extra separator (a comma)" in message


def test_ragged_row_far_into_the_file_is_named_by_its_line(small_chunks):
    rows = b"".join(b"%d,x,%d\n" % (i, i) for i in range(200))
    message = refused(b"a,b,c\n" + rows + b"1,2\n" + rows)
    assert message.startswith("Line 202 has 2 values but the header has 3 columns")


def test_semicolons_and_decimal_commas_are_detected():
    table = read(b"name;price;qty\nwidget;1,50;3\ngadget;2,25;4\n")
    assert table.column_names == ["name", "price", "qty"]
    assert table.column("price").to_pylist() == [1.5, 2.25]
    kinds = [w["kind"] for w in warnings_of(table)]
    assert kinds == ["delimiter", "decimal_comma"]
    assert "separated by semicolons, not commas" in warnings_of(table)[0]["message"]


def test_pipes_and_tabs_are_detected():
    assert read(b"a|b\n1|2\n3|4\n").column("b").to_pylist() == [2, 4]
    tsv = read(b"a\tb\n1\tx, y\n", "tsv")
    assert tsv.column("b").to_pylist() == ["x, y"]
    assert warnings_of(tsv) == []


def test_a_single_column_that_looks_like_another_separator_gets_a_warning():
    table = read(b"a:b:c\n1:2:3\n")
    assert table.num_columns == 1
    assert warnings_of(table)[0]["kind"] == "delimiter"


def test_non_utf8_is_read_as_windows_1252_with_a_warning():
    table = read("name,price\nCafé,5 €\nNaïve,3\n".encode("cp1252"))
    assert table.column("name").to_pylist() == ["Café", "Naïve"]
    assert table.column("price").to_pylist() == ["5 €", "3"]
    warning = warnings_of(table)[0]
    assert warning["kind"] == "encoding" and "Windows-1252" in warning["message"]


def test_non_utf8_bytes_after_the_head_restart_the_check(small_chunks):
    ascii_rows = b"".join(b"%d,plain\n" % i for i in range(100))
    table = read(b"id,word\n" + ascii_rows + "200,Crème brûlée\n".encode("cp1252"))
    assert table.column("word").to_pylist()[-1] == "Crème brûlée"
    assert table.num_rows == 101
    assert [w["kind"] for w in warnings_of(table)] == ["encoding"]


def test_byte_order_marks():
    assert read("\ufeffid,név\n1,Ádám\n".encode()).column_names == ["id", "név"]
    table = read("id,name\n1,Zoë\n".encode("utf-16"))
    assert table.column("name").to_pylist() == ["Zoë"]


def test_refuses_binary_content_in_a_csv():
    assert "not text" in refused(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))


def test_refuses_10000_columns_quickly():
    header = ",".join(f"c{i}" for i in range(10_000)).encode()
    row = ",".join("1" for _ in range(10_000)).encode()
    started = time.perf_counter()
    message = refused(header + b"\n" + (row + b"\n") * 50)
    assert time.perf_counter() - started < 2
    assert message.startswith(f"The file has 10,000 columns; the portal reads at most {MAX_COLUMNS:,}.")


def test_refuses_duplicate_column_names_naming_them():
    message = refused(b"id,name,id,x,name,id\n1,a,2,3,b,4\n")
    assert message == (
        "Column names must be unique, but `id` appears 3 times, `name` appears 2 times. "
        "Rename the columns and upload the file again."
    )


def test_names_blank_header_cells():
    table = read(b"id,,amount\n1,x,2\n")
    assert table.column_names == ["id", "column_2", "amount"]
    assert "named `column_2`" in warnings_of(table)[0]["message"]


def test_formula_like_cells_are_plain_text():
    table = read(b"id,comment\n1,=cmd|' /C calc'!A0\n2,@SUM(1+1)\n3,+1\n")
    assert table.column("comment").to_pylist() == ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1"]


def test_values_with_line_breaks_across_chunks(small_chunks):
    rows = b"".join(b'%d,"line one\nline two, %d"\n' % (i, i) for i in range(60))
    table = read(b"id,text\n" + rows)
    assert table.num_rows == 60
    assert table.column("text").to_pylist()[59] == "line one\nline two, 59"


def test_reads_a_stream_that_cannot_seek(small_chunks):
    data = b"id,v\n" + b"".join(b"%d,%d.5\n" % (i, i) for i in range(300))
    batches = list(iter_batches(Unseekable(data), "csv", batch_rows=100))
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 300
    assert table.schema.field("v").type == pa.float64()


# --- CSV: types -----------------------------------------------------------------------------------------


def test_infers_the_portals_types():
    table = read(
        b"i,f,b,d,t,s,empty\n1,1.5,true,2024-01-31,2024-01-31 10:00:00,x,\n-2,,false,2024-02-01,2024-02-01T11:30:00,,\n"
    )
    types = {f.name: f.type for f in table.schema}
    assert types == {
        "i": pa.int64(),
        "f": pa.float64(),
        "b": pa.bool_(),
        "d": pa.timestamp("s"),
        "t": pa.timestamp("s"),
        "s": pa.string(),
        "empty": pa.string(),
    }
    assert table.column("f").to_pylist() == [1.5, None]
    assert table.column("d").to_pylist()[0] == dt.datetime(2024, 1, 31)


@pytest.mark.parametrize(
    ("late_value", "expected_type", "expected_last"),
    [
        (b"abc", pa.string(), "abc"),
        (b"2.5", pa.float64(), 2.5),
        (b"", pa.int64(), None),
    ],
)
def test_a_type_that_changes_late_in_the_file(small_chunks, late_value, expected_type, expected_last):
    ints = b"".join(b"%d,%d\n" % (i, i) for i in range(500))
    table = read(b"id,n\n" + ints + b"500," + late_value + b"\n", batch_rows=64)
    assert table.schema.field("n").type == expected_type
    column = table.column("n").to_pylist()
    assert column[-1] == expected_last
    assert column[:3] == (
        [0, 1, 2] if expected_type == pa.int64() else ["0", "1", "2"] if expected_last == "abc" else [0.0, 1.0, 2.0]
    )
    assert table.num_rows == 501
    assert all(b.num_rows <= 64 for b in iter_batches(io.BytesIO(b"id,n\n" + ints), "csv", batch_rows=64))


def attempts_of(data: bytes, stream=None) -> tuple[list[int], pa.Table]:
    """How many batches each call of `consume` saw before it finished or was stopped, and the result."""
    seen: list[int] = []

    def consume(batches):
        seen.append(0)
        out = []
        for batch in batches:
            seen[-1] += 1
            out.append(batch)
        return pa.Table.from_batches(out)

    return seen, read_batches(stream or io.BytesIO(data), "csv", consume, batch_rows=64)


def test_one_pass_when_the_first_chunk_settles_the_types(small_chunks):
    data = b"id,n,name\n" + b"".join(b"%d,%d.5,p%d\n" % (i, i, i) for i in range(500))
    seen, table = attempts_of(data)
    assert len(seen) == 1 and seen[0] >= 8
    assert table.num_rows == 500 and table.schema.field("n").type == pa.float64()


@pytest.mark.parametrize("late", [b"500,2.5\n", b"500,abc\n", b"500,\xe9t\xe9\n", b"500,1,2\n"])
def test_a_late_surprise_starts_the_consumer_over_with_the_right_types(small_chunks, late):
    data = b"id,n\n" + b"".join(b"%d,%d\n" % (i, i) for i in range(500)) + late
    try:
        expected = collect(iter_batches(io.BytesIO(data), "csv", batch_rows=64))
    except DataFileError as exc:  # the ragged row: the second attempt names it, as the two passes do
        with pytest.raises(DataFileError, match="Line 502 has 3 values"):
            attempts_of(data)
        assert "Line 502" in str(exc)
        return
    seen, table = attempts_of(data, Unseekable(data))  # a copy is kept for the second attempt
    assert len(seen) == 2 and seen[0] >= 1, "the first attempt handed out batches before it met the row"
    assert table.equals(expected)


def test_a_column_empty_at_first_gets_its_type_from_later_rows(small_chunks):
    rows = b"".join(b"%d,\n" % i for i in range(300)) + b"".join(
        b"%d,2024-05-%02d\n" % (i, i % 28 + 1) for i in range(300, 320)
    )
    table = read(b"id,when\n" + rows)
    assert table.schema.field("when").type == pa.timestamp("s")
    assert table.column("when").null_count == 300


def test_times_gain_precision_when_needed(small_chunks):
    rows = b"".join(b"%d,2024-01-01 00:00:%02d\n" % (i, i % 60) for i in range(300))
    table = read(b"id,at\n" + rows + b"300,2024-01-01 00:00:00.250\n")
    assert table.schema.field("at").type.unit in ("ms", "us", "ns")
    assert table.column("at").to_pylist()[-1] == dt.datetime(2024, 1, 1, 0, 0, 0, 250_000)


# --- Parquet --------------------------------------------------------------------------------------------


def parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def test_parquet_types_are_normalised():
    source = pa.table(
        {
            "small": pa.array([1, 2], pa.int8()),
            "f32": pa.array([1.5, None], pa.float32()),
            "day": pa.array([dt.date(2024, 1, 2), None], pa.date32()),
            "cat": pa.array(["a", "b"]).dictionary_encode(),
            "tags": pa.array([["x", "y"], []]),
        }
    )
    table = read(parquet_bytes(source), "parquet", batch_rows=1)
    assert [f.type for f in table.schema] == [pa.int64(), pa.float64(), pa.timestamp("s"), pa.string(), pa.string()]
    assert table.column("tags").to_pylist() == ['["x", "y"]', "[]"]
    assert warnings_of(table)[0]["kind"] == "nested"
    assert table.schema.metadata[readers.ROWS_KEY] == b"2"


def test_parquet_with_duplicate_or_too_many_columns_is_refused():
    duplicated = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    assert refused(parquet_bytes(duplicated), "parquet").startswith("Column names must be unique, but `a`")
    wide = pa.table({f"c{i}": [1] for i in range(MAX_COLUMNS + 1)})
    assert "2,001 columns" in refused(parquet_bytes(wide), "parquet")


def test_damaged_parquet_is_refused():
    data = parquet_bytes(pa.table({"a": [1, 2, 3]}))
    assert "can't be read" in refused(data[: len(data) // 2] + b"PAR1", "parquet")


def test_parquet_without_rows_still_has_its_schema():
    table = read(parquet_bytes(pa.table({"a": pa.array([], pa.int32())})), "parquet")
    assert table.num_rows == 0 and table.schema.field("a").type == pa.int64()


# --- Excel ----------------------------------------------------------------------------------------------


def xlsx_bytes(rows: list[list]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_reads_the_first_sheet_of_a_workbook():
    data = xlsx_bytes(
        [
            ["id", "name", "price", "paid", "when", "mixed"],
            [1, "Ada", 1.5, True, dt.datetime(2024, 1, 2, 3, 4), 1],
            [2, "Alan", 2, False, dt.date(2024, 2, 3), "two"],
            [None, None, None, None, None, None],
            [3, None, None, None, None, None],
        ]
    )
    table = read(data, "xlsx", batch_rows=2)
    assert [f.type for f in table.schema] == [
        pa.int64(),
        pa.string(),
        pa.float64(),
        pa.bool_(),
        pa.timestamp("us"),
        pa.string(),
    ]
    assert table.num_rows == 3  # the empty row is skipped
    assert table.column("price").to_pylist() == [1.5, 2.0, None]
    assert table.column("when").to_pylist()[:2] == [dt.datetime(2024, 1, 2, 3, 4), dt.datetime(2024, 2, 3)]
    assert table.column("mixed").to_pylist() == ["1", "two", None]


def test_excel_formulas_are_never_evaluated():
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["a", "b"])
    book.active.append([1, "=cmd|' /C calc'!A0"])  # stored as a formula without a cached value
    buffer = io.BytesIO()
    book.save(buffer)
    table = read(buffer.getvalue(), "xlsx")
    assert table.column("b").to_pylist() == [None]


def test_empty_workbook_is_refused():
    assert refused(xlsx_bytes([]), "xlsx") == "The file is empty: the first sheet has no data."


def test_zip_bomb_disguised_as_xlsx_is_refused_before_unpacking():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (20 << 20))
    message = refused(buffer.getvalue(), "xlsx")
    assert "zip bomb" in message and "Save the data as CSV or Parquet" in message


def test_xlsx_declaring_too_much_data_is_refused(monkeypatch):
    monkeypatch.setattr(readers.excel, "MAX_XLSX_UNCOMPRESSED_BYTES", 1000)
    assert "zip bomb" in refused(xlsx_bytes([["a"], ["x" * 2000]]), "xlsx")


def test_a_zip_that_is_not_a_workbook_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "hello")
    assert "not an Excel workbook" in refused(buffer.getvalue(), "xlsx")
