"""Answer a page request: validate it, then filter, sort and slice the cached version's rows (or, for a
plain page of a version not loaded yet, read only the row groups that hold it)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow.parquet as pq

from .cache import _cached_version, is_cached, warm
from .columns import _OTHER, GridQueryError, _Version
from .filters import _filter_mask
from .sorting import _sorted_window

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class GridPage:
    columns: list[str]
    rows: list[list]  # JSON-serialisable cell values (datetimes as ISO strings, None for null)
    total: int  # rows matching the filters
    page: int
    page_size: int
    pages: int


def read_page(
    key: str,
    opener: Callable[[], BinaryIO],
    *,
    page: int = 1,
    page_size: int = 50,
    sort: str | None = None,
    descending: bool = False,
    filters: Mapping[str, str] | None = None,
    hidden_columns: Collection[str] = (),
) -> GridPage:
    """One page of the rows of the Parquet file `opener()` returns, matching `filters`, ordered by `sort`.

    `key` names the immutable file (a version's id): the rows are read once per process and cached.
    Sorting is stable (ties keep file order) with empty cells last in both directions. A page past the
    end comes back with no rows and the right total. page_size is capped at MAX_PAGE_SIZE.
    Filter syntax, per column: `text` (contains, ignoring case, for text; equals for numbers, booleans
    and dates), `=x` exact, `!x` everything else (empty cells included), `>x` `>=x` `<x` `<=x` for
    numbers and dates, `is:empty`, `is:notempty`. A date may be partial: `2024-03` is that month.
    A leading backslash makes the rest plain text (`\\>5` contains ">5").
    """
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise GridQueryError("page must be a whole number, 1 or more.")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise GridQueryError("page_size must be a whole number, 1 or more.")
    page_size = min(page_size, MAX_PAGE_SIZE)
    hidden = set(hidden_columns)
    filters = {
        name: str(text).strip()
        for name, text in (filters or {}).items() if text is not None and str(text).strip()
    }
    if not sort and not filters and not is_cached(key):
        # The first look at a version is usually a plain page: read just its row groups, and load the whole
        # version for the sorts and filters that may follow in the background.
        warm(key, opener)
        return _page_from_row_groups(opener, page, page_size, hidden)
    version = _cached_version(key, opener)
    visible = [i for i, name in enumerate(version.names) if name not in hidden]
    sort_column = version.column(sort, hidden, purpose="sort by") if sort else None
    if sort_column is not None and sort_column.kind == _OTHER:
        raise GridQueryError(
            f"The column “{sort}” cannot be sorted: its values ({sort_column.array.type}) have no order."
        )

    mask = None
    for name, text in filters.items():
        column_mask = _filter_mask(version.column(name, hidden, purpose="filter on"), text)
        mask = column_mask if mask is None else mask & column_mask
    selected = None if mask is None else np.flatnonzero(mask)

    total = version.num_rows if selected is None else len(selected)
    start, stop = (page - 1) * page_size, min(page * page_size, total)
    if start >= total:
        indices = np.empty(0, dtype=np.int64)
    elif sort_column is not None:
        indices = _sorted_window(sort_column, selected, start, stop, descending=descending)
    else:
        indices = np.arange(start, stop) if selected is None else selected[start:stop]
    return GridPage(
        columns=[version.names[i] for i in visible],
        rows=version.rows(visible, indices),
        total=total,
        page=page,
        page_size=page_size,
        pages=max(1, math.ceil(total / page_size)),
    )


def _page_from_row_groups(opener: Callable[[], BinaryIO], page: int, page_size: int, hidden: set[str]) -> GridPage:
    """An unsorted, unfiltered page read from the row groups that hold it, without loading the version."""
    with opener() as handle:
        parquet = pq.ParquetFile(handle)
        total = parquet.metadata.num_rows
        start, stop = (page - 1) * page_size, min(page * page_size, total)
        groups, first_row, offset = [], 0, 0
        for index in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if offset < stop and offset + rows > start:
                if not groups:
                    first_row = offset
                groups.append(index)
            offset += rows
        table = parquet.read_row_groups(groups) if groups else parquet.schema_arrow.empty_table()
    if groups:
        table = table.slice(start - first_row, stop - start)
    rows = _Version(table)
    visible = [i for i, name in enumerate(rows.names) if name not in hidden]
    return GridPage(
        columns=[rows.names[i] for i in visible],
        rows=rows.rows(visible, np.arange(rows.num_rows)) if start < total else [],
        total=total,
        page=page,
        page_size=page_size,
        pages=max(1, math.ceil(total / page_size)),
    )
