"""Tell an upload's format from its name and first bytes, and refuse files that are not what they claim."""

from __future__ import annotations

import codecs
import os
import unicodedata

from .base import DataFileError

_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
}
_MAGIC = [
    (b"PAR1", "parquet", "a Parquet file"),
    (b"PK\x03\x04", "zip", "a zip archive (an Excel workbook is one)"),
    (b"PK\x05\x06", "zip", "a zip archive (an Excel workbook is one)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole", "an old-style Excel (.xls) or other Office file"),
    (b"\x1f\x8b", "binary", "gzip-compressed data"),
    (b"BZh", "binary", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "binary", "xz-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "binary", "a 7-Zip archive"),
    (b"Rar!", "binary", "a RAR archive"),
    (b"%PDF", "binary", "a PDF document"),
    (b"\x89PNG", "binary", "a PNG image"),
    (b"\xff\xd8\xff", "binary", "a JPEG image"),
    (b"GIF8", "binary", "a GIF image"),
    (b"SQLite format 3\x00", "binary", "an SQLite database"),
    (b"\x7fELF", "binary", "a program (ELF executable)"),
    (b"MZ", "binary", "a Windows program"),
    (b"ARROW1", "binary", "an Arrow IPC file"),
]


MAX_FILENAME = 255


def clean_filename(filename: str | None, default: str = "upload") -> str:
    """The name an upload is shown and audited under: its last path part, without control or bidi characters.

    Browsers and Django already drop most of this; services clean again because a name is shown to other people
    and written to the audit trail: no NUL (PostgreSQL refuses it), no "../", no right-to-left override that
    shows "invoice‮vsc.exe" as "invoiceexe.csv", at most 255 characters with the extension kept.
    Stored files never use this name (storage names them by a UUID and a sanitised copy).
    """
    name = unicodedata.normalize("NFC", str(filename or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
    name = name.strip(" .")
    if not name:
        return default
    stem, ext = os.path.splitext(name)
    if len(ext) > 16:
        stem, ext = name, ""
    return stem[: MAX_FILENAME - len(ext)] + ext


def detect_format(filename: str, head: bytes) -> str:
    """Return "csv", "tsv", "parquet" or "xlsx" from the file name and its first bytes (a few KB is plenty).

    The extension says what the user meant and the first bytes say what the file is; they must agree.
    """
    ext = os.path.splitext(filename.lower())[1]
    if ext == ".xls":
        raise DataFileError(
            "Old-style Excel files (.xls) are not supported. Open the file in Excel, save it as .xlsx or CSV, "
            "and upload that."
        )
    fmt = _EXTENSIONS.get(ext)
    if fmt is None:
        shown = f"“{ext}” files are" if ext else "Files without an extension are"
        raise DataFileError(f"{shown} not supported. Upload a .csv, .tsv, .parquet or .xlsx file.")
    if not head:
        raise DataFileError("The file is empty.")
    magic, description = _sniff_magic(head)
    if fmt == "parquet":
        if magic != "parquet":
            raise DataFileError(
                f"“{filename}” is not a Parquet file ({_described(magic, description)}). Check that you chose "
                "the right file, or give it the extension that matches its content."
            )
    elif fmt == "xlsx":
        if magic == "ole":
            raise DataFileError(
                f"“{filename}” is an old-style Excel file (.xls) renamed to .xlsx. Open it in Excel, save it as "
                ".xlsx or CSV, and upload that."
            )
        if magic != "zip":
            raise DataFileError(
                f"“{filename}” is not an Excel workbook ({_described(magic, description)}). Check that you "
                "chose the right file, or save the data from Excel as .xlsx."
            )
    elif magic is not None:
        hint = {
            "parquet": " Rename it to .parquet and upload it again.",
            "zip": " If it is an Excel workbook, rename it to .xlsx and upload it again.",
            "ole": " If it is an Excel file, save it as .xlsx or CSV and upload that.",
        }.get(magic, " Upload the data as CSV, TSV, Parquet or Excel (.xlsx).")
        raise DataFileError(f"“{filename}” is named like a text file but contains {description}, not text.{hint}")
    return fmt


def _described(magic: str | None, description: str) -> str:
    return f"it contains {description}" if magic else "its content is text or an unknown format"


def _sniff_magic(head: bytes) -> tuple[str | None, str]:
    for prefix, kind, description in _MAGIC:
        if head.startswith(prefix):
            return kind, description
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None, ""
    sample = head[:8192]
    controls = sum(sample.count(bytes([c])) for c in range(32) if c not in (9, 10, 12, 13))
    if b"\x00" in sample or controls > len(sample) * 0.1:
        return "binary", "binary data"
    return None, ""
