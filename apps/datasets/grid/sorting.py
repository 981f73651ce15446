"""Sort a page's window of rows by one column, stably and with empty cells last, without sorting everything."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow.compute as pc

from .columns import _Column

# Beyond this many texts sharing the sort window's 8-byte prefixes, rank the whole column once instead.
_MAX_PREFIX_TIES = 50_000


def _sorted_window(
    column: _Column, selected: np.ndarray | None, start: int, stop: int, *, descending: bool
) -> np.ndarray:
    """Row indices at positions [start, stop) of the (selected) rows stably sorted by `column`, nulls last."""
    keys, valid, exact = column.sort_keys()
    if descending:  # order-reversing and exact: -x for floats, ~x (= -x-1, or max-x unsigned) for integers
        keys = -keys if keys.dtype.kind == "f" else ~keys
    rows = selected  # row index of each entry of keys (None: the same)
    if selected is not None:
        keys = keys[selected]
        valid = None if valid is None else valid[selected]
    nulls = np.empty(0, dtype=np.int64)
    if valid is not None:
        non_null, null = np.flatnonzero(valid), np.flatnonzero(~valid)
        rows, nulls = (non_null, null) if rows is None else (rows[non_null], rows[null])
        keys = keys[non_null]

    def to_rows(positions: np.ndarray) -> np.ndarray:
        return positions if rows is None else rows[positions]

    def order_ties(candidates: np.ndarray) -> np.ndarray:
        """Candidates (in file order) whose prefixes tie, in full-text order."""
        if len(candidates) > _MAX_PREFIX_TIES:  # texts alike for 8 bytes: rank them all once instead
            ranks, _valid_rows = column.text_index().ranks()
            tied = ranks[to_rows(candidates)]
            return candidates[np.argsort(~tied if descending else tied, kind="stable")]
        strings = column.array.take(to_rows(candidates))
        order = pc.array_sort_indices(strings, order="descending" if descending else "ascending")
        return candidates[order.to_numpy()]

    parts = []
    if start < len(keys):
        parts.append(to_rows(_stable_window(keys, start, min(stop, len(keys)), None if exact else order_ties)))
    if stop > len(keys):
        parts.append(nulls[max(0, start - len(keys)) : stop - len(keys)])
    return np.concatenate(parts)


def _stable_window(
    keys: np.ndarray, start: int, stop: int, order_ties: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Positions [start, stop) of a stable argsort of `keys`, in O(n) rather than sorting everything.

    A partition finds the first and last key of the window; only the entries with keys between them are
    sorted (by `order_ties` when the keys are coarser than the values). Entries tied with the first key
    fill the window after those strictly below it, in file order.
    """
    bounds = np.partition(keys, sorted({start, stop - 1}))
    low, high = bounds[start], bounds[stop - 1]
    below = np.count_nonzero(keys < low)
    candidates = np.flatnonzero((keys >= low) & (keys <= high))
    if order_ties is None:
        candidates = candidates[np.argsort(keys[candidates], kind="stable")]
    else:
        candidates = order_ties(candidates)
    return candidates[start - below : stop - below]
