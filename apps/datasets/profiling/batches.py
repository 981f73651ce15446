"""The single pass: batches go through the columns (in a thread pool), the sample and the row hashes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from .. import readers
from .arrays import _row_hash
from .columns import _Column
from .sampling import _Samples
from .summary import ROW_HASH_LIMIT, _empty_profile, _summarise


class _Progress:
    """Call the caller's progress at most about twice a second, percent never going backwards."""

    def __init__(self, callback: Callable[[int, str], None] | None) -> None:
        self.callback = callback
        self.percent = -1
        self.at = 0.0

    def __call__(self, percent: float, message: str, *, force: bool = False) -> None:
        if self.callback is None:
            return
        percent = max(0, min(99, int(percent)))
        now = time.monotonic()
        if force or (percent > self.percent and now - self.at >= 0.5):
            self.percent, self.at = max(percent, self.percent), now
            self.callback(self.percent, message)


def profile_batches(
    batches: Iterable[pa.RecordBatch],
    *,
    total_bytes: int | None = None,
    progress: Callable[[int, str], None] | None = None,
    sink: Callable[[pa.RecordBatch], None] | None = None,
) -> dict:
    """Profile the rows in `batches` (one schema) in a single pass; see the package docstring.

    `progress(percent 0-99, message)` is called now and then; `sink(batch)` receives every batch, in order,
    in a worker thread so that the caller's writing overlaps with profiling. Returns JSON-ready data.
    """
    report = _Progress(progress)
    token = readers.progress_hook.set(report) if progress else None
    workers = max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="portal-profile") if workers > 1 else None
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portal-sink") if sink else None
    try:
        return _profile(batches, total_bytes, report, sink, pool, writer)
    finally:
        if token is not None:
            readers.progress_hook.reset(token)
        for executor in (pool, writer):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


def _profile(batches, total_bytes, report: _Progress, sink, pool, writer) -> dict:
    schema: pa.Schema | None = None
    columns: list[_Column] = []
    samples: _Samples | None = None
    row_hashes: list[np.ndarray] | None = []
    rows = 0
    seen_bytes = 0
    pending: Future | None = None
    expected = start = None
    for batch in batches:
        if schema is None:
            schema = batch.schema
            columns = [_Column(f) for f in schema]
            samples = _Samples(schema)
            meta = schema.metadata or {}
            expected = int(meta[readers.ROWS_KEY]) if readers.ROWS_KEY in meta else None
            start = int(meta.get(readers.PROGRESS_FROM_KEY, b"0"))
        if writer is not None:
            if pending is not None:
                pending.result()
            pending = writer.submit(sink, batch)
        if not batch.num_rows:
            continue
        hashes = _update_columns(columns, batch.columns, pool)
        samples.add(batch)  # in this thread, while the pool works on the columns
        hashes = list(hashes)
        if row_hashes is not None:
            row_hashes.append(_row_hash(hashes, batch.num_rows))
            if rows + batch.num_rows > ROW_HASH_LIMIT:
                row_hashes = None
        rows += batch.num_rows
        seen_bytes += batch.nbytes
        if expected:
            report(start + (99 - start) * rows / expected, f"Profiling ({rows:,} of {expected:,} rows)")
        elif total_bytes:
            report(start + (98 - start) * min(1.0, seen_bytes / total_bytes), f"Profiling ({rows:,} rows so far)")
    if pending is not None:
        pending.result()
    report(99, "Summarising the profile", force=True)
    if schema is None:
        return _empty_profile()
    if pool is not None:
        list(pool.map(_Column.finish, columns))
    else:
        for column in columns:
            column.finish()
    sampled, sampled_rows = samples.columns()
    return _summarise(columns, sampled, sampled_rows, rows, row_hashes, schema, pool)


def _update_columns(columns: list[_Column], arrays: list[pa.Array], pool) -> Iterable[np.ndarray]:
    """Each column's hashes for the batch: computed now, or submitted to the pool (an iterator of results)."""
    if pool is None:
        return [column.update(arr) for column, arr in zip(columns, arrays, strict=True)]
    return pool.map(_Column.update, columns, arrays)
