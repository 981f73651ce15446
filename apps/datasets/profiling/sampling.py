"""A uniform sample of rows (bottom-k of random keys), for quantiles, histograms, correlations and PII."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .arrays import _indices
from .columns import _kind

SAMPLE_ROWS = 100_000
TEXT_SAMPLE_ROWS = 5_000  # text is sampled for personal data and formula-like values only


class _Sample:
    """A uniform sample of rows without replacement: the rows with the smallest random keys."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = np.random.default_rng(seed)
        self.batches: list[pa.RecordBatch] = []
        self.keys: list[np.ndarray] = []
        self.held = 0
        self.threshold = 1.0

    def add(self, batch: pa.RecordBatch) -> None:
        keys = self.rng.random(batch.num_rows)
        if self.threshold < 1.0:
            chosen = np.flatnonzero(keys < self.threshold)
            if not len(chosen):
                return
            batch, keys = batch.take(_indices(chosen)), keys[chosen]
        elif self.size < batch.num_rows:
            chosen = np.sort(np.argpartition(keys, self.size - 1)[: self.size])
            batch, keys = batch.take(_indices(chosen)), keys[chosen]
        self.batches.append(batch)
        self.keys.append(keys)
        self.held += len(keys)
        if self.threshold == 1.0 and self.held >= self.size:  # from now on, only rows that may make the cut
            self.threshold = float(np.partition(np.concatenate(self.keys), self.size - 1)[self.size - 1])
        if self.held > 3 * self.size:
            self._compact()

    def _compact(self) -> None:
        keys = np.concatenate(self.keys)
        batches = self.batches
        if len(keys) > self.size:
            keep = np.zeros(len(keys), bool)
            keep[np.argpartition(keys, self.size - 1)[: self.size]] = True
            batches, start = [], 0
            for batch in self.batches:  # batch by batch: a take from the whole table would first copy it all
                part = keep[start : start + batch.num_rows]
                start += batch.num_rows
                if part.all():
                    batches.append(batch)
                elif part.any():
                    batches.append(batch.take(_indices(np.flatnonzero(part))))
            keys = keys[keep]
            self.threshold = float(keys.max())
        self.batches = pa.Table.from_batches(batches, schema=self.batches[0].schema).combine_chunks().to_batches()
        self.keys = [keys]
        self.held = len(keys)

    def table(self, schema: pa.Schema) -> pa.Table:
        if not self.batches:
            return schema.empty_table()
        self._compact()
        return pa.Table.from_batches(self.batches, schema=schema)


class _Samples:
    """Numbers and times in a large sample (quantiles, histograms, correlations); text in a small one."""

    def __init__(self, schema: pa.Schema) -> None:
        self.wide = [i for i, f in enumerate(schema) if _kind(f.type) in ("int", "float", "time")]
        self.text = [i for i, f in enumerate(schema) if _kind(f.type) not in ("int", "float", "time")]
        self.schema = schema
        self.samples = [_Sample(SAMPLE_ROWS, seed=1), _Sample(TEXT_SAMPLE_ROWS, seed=2)]

    def add(self, batch: pa.RecordBatch) -> None:
        for indices, sample in zip((self.wide, self.text), self.samples, strict=True):
            if indices:
                sample.add(batch.select(indices))

    def columns(self) -> tuple[list, int]:
        """Each column's sampled values, in schema order, and the number of rows in the main sample."""
        out: list = [None] * len(self.schema)
        rows = []
        for indices, sample in zip((self.wide, self.text), self.samples, strict=True):
            if indices:
                table = sample.table(pa.schema([self.schema.field(i) for i in indices]))
                rows.append(table.num_rows)
                for position, i in enumerate(indices):
                    out[i] = table.column(position).combine_chunks()
        return out, rows[0] if rows else 0
