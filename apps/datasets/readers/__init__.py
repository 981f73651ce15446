"""Read uploaded data files (CSV, TSV, Parquet, Excel) as Arrow record batches with one final schema.

Every problem with a file is a `DataFileError` whose message is shown to the user as it is. Notes that
are not errors (the encoding or separator we guessed, renamed columns) travel with the batches in the
schema metadata under `WARNINGS_KEY`; `profiling.profile_batches` turns them into profile warnings.

How CSV/TSV is read: Arrow's streaming reader fixes each column's type from the first block and fails when a
later row disagrees (whole numbers, then "1.5" or "abc" at row 900,000), and batches must carry their final
types (the Parquet copy is written as they arrive). `read_batches` (what the profiling job uses) is
optimistic: it parses each chunk of about `batch_rows` rows once, every column typed as the first chunk
settled, and hands it out at once, in a background thread that overlaps with the consumer. If a later chunk
does not fit, it raises `StartOver` and calls the consumer again with the two-pass reader, which is also what
`iter_batches` gives: a first pass parses the non-text columns of every chunk, widening a column (integer ->
float -> text) when a chunk disagrees, and checks row lengths and UTF-8; those typed columns wait in a spool
(memory, then a temporary file); the second pass parses only the text columns and puts each chunk back
together. A file that fits in one chunk is parsed once either way.

Encodings: UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark are read as they
are. Anything else is read as Windows-1252 (bytes it leaves undefined as Latin-1) with a warning, which
is right for files saved by Excel on Western-European Windows and never fails.

Cells that look like spreadsheet formulas (`=cmd|' /C calc'!A0`) are plain text here: nothing is ever
evaluated. Excel files are read with `data_only=True`, i.e. the values Excel last calculated.
"""

from __future__ import annotations

from .base import MAX_COLUMNS, PROGRESS_FROM_KEY, ROWS_KEY, WARNINGS_KEY, DataFileError, progress_hook
from .batches import iter_batches, read_batches
from .formats import clean_filename, detect_format

__all__ = [
    "MAX_COLUMNS",
    "PROGRESS_FROM_KEY",
    "ROWS_KEY",
    "WARNINGS_KEY",
    "DataFileError",
    "clean_filename",
    "detect_format",
    "iter_batches",
    "read_batches",
    "progress_hook",
]
