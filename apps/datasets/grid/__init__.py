"""The data grid: one page of a dataset version's rows, sorted and filtered on the server.

A version's typed Parquet copy is read once into an Arrow table held in a small per-process LRU cache.
Until it is there, a plain page (no sort, no filter) is read from the row groups that hold it, while the
version loads in the background. Once loaded, each request works on whole columns at C speed (a filter
mask, a partial sort) and turns only the page's rows into Python values, so any page of a million rows
answers in tens of milliseconds.
"""

from __future__ import annotations

from .cache import CACHE_BYTES, CACHE_ENTRIES, clear_cache, wait_for_warming, warm
from .columns import GridQueryError
from .pages import MAX_PAGE_SIZE, GridPage, read_page

__all__ = [
    "CACHE_BYTES",
    "CACHE_ENTRIES",
    "MAX_PAGE_SIZE",
    "GridPage",
    "GridQueryError",
    "clear_cache",
    "read_page",
    "wait_for_warming",
    "warm",
]
