"""Profile a dataset in one pass over Arrow record batches: the JSON stored on `DatasetVersion.profile`.

Exact, from every row: row count, missing values, min/max/mean/std (streaming, with Chan et al.'s
parallel update), distinct counts (a bitmap for integers and dates in a range of a few million; else 64-bit
hashes of the values, exact up to a memory cap, then a k-minimum-values estimate), duplicate rows (a 64-bit
hash per row) and the top values of columns with few distinct values. From a uniform sample of rows
(bottom-k of random keys): quantiles, histograms (scaled to the exact count), correlations, personal data by
content and formula-like text.

A batch's columns are processed in a small thread pool; NumPy and Arrow release the GIL in their loops.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import pii, readers

SAMPLE_ROWS = 100_000
TEXT_SAMPLE_ROWS = 5_000  # text is sampled for personal data and formula-like values only
TOP_VALUES = 10
TRACKED_VALUES = 1_000  # distinct values counted one by one (exact top values); beyond that, hashes
CATEGORICAL_MAX = 1_000
DISTINCT_EXACT = 100_000  # distinct values counted exactly; beyond that, estimated
KMV_K = 4096  # k-minimum-values estimate: about 1.6% error
BITMAP_SPAN = 1 << 22  # whole numbers (and days) in a range this wide are counted exactly, by a bitmap
UNIQUE_CHECK_ROWS = 20_000_000  # rows up to which an all-distinct integer or text column is checked exactly
ROW_HASH_LIMIT = 32_000_000  # rows whose hashes are kept to count duplicate rows (8 bytes each)
HISTOGRAM_BINS = 20
MAX_CORRELATION_COLUMNS = 30
PII_VALUES = 2_000

_NULL = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROW = np.uint64(0x100000001B3)
_PAD = np.uint64(0x2020202020202020)  # eight spaces, Arrow's padding for short strings
_WORD_KEYS = [np.uint64(k | 1) for k in np.random.default_rng(20240229).integers(1, 2**63, 8, dtype=np.int64)]
_SALT = {"int": np.uint64(1), "float": np.uint64(2), "time": np.uint64(3), "long": np.uint64(4)}
_TRUE, _FALSE = np.uint64(0x5851F42D4C957F2D), np.uint64(0x14057B7EF767814F)
_POWERS: list[np.ndarray] = [np.ones(1, np.uint64)]


# --- NumPy views (Array.to_numpy() would import pandas: a third of a second and tens of MB) --------------

_DTYPES = {"int64": np.int64, "int32": np.int32, "double": np.float64, "uint64": np.uint64, "int8": np.int8}


def _np(arr: pa.Array) -> np.ndarray:
    """Zero-copy view of a fixed-width array's values (nulls hold arbitrary values); booleans are unpacked."""
    if pa.types.is_boolean(arr.type):
        bits = np.frombuffer(arr.buffers()[1], np.uint8)
        return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)
    dtype = _DTYPES[str(arr.type)]
    return np.frombuffer(arr.buffers()[1], dtype, len(arr), arr.offset * np.dtype(dtype).itemsize)


def _mask(values: np.ndarray) -> pa.BooleanArray:
    """NumPy booleans as an Arrow filter (pa.array() would import pandas too)."""
    bits = np.packbits(values, bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _indices(values: np.ndarray) -> pa.Int64Array:
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _valid(arr: pa.Array) -> np.ndarray | None:
    """Boolean mask of non-null values, or None when there are no nulls."""
    if not arr.null_count:
        return None
    bits = np.frombuffer(arr.buffers()[0], np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)


# --- 64-bit hashes of values (the same value always gets the same hash, in any batch) --------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place on a writable uint64 array."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _hash_bits(values: np.ndarray, salt: np.uint64) -> np.ndarray:
    return _mix(values.view(np.uint64) ^ salt)


def _hash_strings(arr: pa.Array) -> np.ndarray:
    """Hash every value of a string array (nulls get _NULL)."""
    if arr.type != pa.string():
        arr = arr.cast(pa.string())
    valid = _valid(arr)
    if valid is not None:
        out = _hash_strings(arr.fill_null(""))
        out[~valid] = _NULL
        return out
    lengths = _np(pc.binary_length(arr))
    if not len(arr) or lengths.max() <= 64:
        return _hash_short(arr, lengths)
    long = lengths > 64
    out = np.empty(len(arr), np.uint64)
    out[~long] = _hash_short(arr.filter(_mask(~long)), lengths[~long])
    out[long] = _hash_long(arr.filter(_mask(long)))
    return out


def _hash_short(arr: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """Strings of at most 64 bytes: pad to whole 8-byte words, hash each word by position, XOR together.

    Padding words (all spaces) contribute nothing, so the hash does not depend on the batch's longest value.
    """
    if not len(arr):
        return np.empty(0, np.uint64)
    width = max(8, -(-int(lengths.max()) // 8) * 8)
    padded = pc.ascii_rpad(arr, width=width, padding=" ")
    first = int(np.frombuffer(padded.buffers()[1], np.int32, 1, padded.offset * 4)[0])
    words = np.frombuffer(padded.buffers()[2], np.uint64, len(arr) * width // 8, first).reshape(len(arr), -1)
    h = lengths.astype(np.uint64) * _M1
    for j in range(width // 8):  # a column of words at a time: faster than one reduction over a thin axis
        x = words[:, j] ^ _PAD
        x *= _WORD_KEYS[j]
        x ^= x >> np.uint64(31)
        x *= _M2
        h ^= x
    return _mix(h)


def _hash_long(arr: pa.Array) -> np.ndarray:
    """Strings over 64 bytes: a polynomial hash of the bytes, in slices of about 1 MB of text."""
    out = np.empty(len(arr), np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, len(arr) + 1, arr.offset * 4).astype(np.int64)
    data = np.frombuffer(arr.buffers()[2], np.uint8)
    start = 0
    while start < len(arr):
        stop = int(np.searchsorted(offsets, offsets[start] + (1 << 20), side="right"))
        stop = min(max(stop - 1, start + 1), len(arr))
        bounds = offsets[start : stop + 1]
        lengths = np.diff(bounds)
        seg = data[bounds[0] : bounds[-1]].astype(np.uint64)
        position = np.arange(len(seg), dtype=np.int64) - np.repeat(bounds[:-1] - bounds[0], lengths)
        sums = np.add.reduceat(seg * _powers(int(lengths.max()))[position], bounds[:-1] - bounds[0])
        out[start:stop] = _mix(sums ^ (lengths.astype(np.uint64) * _M2) ^ _SALT["long"])
        start = stop
    return out


def _powers(n: int) -> np.ndarray:
    if len(_POWERS[0]) < n:
        _POWERS[0] = np.concatenate([[np.uint64(1)], np.cumprod(np.full(n, _ROW, np.uint64))])
    return _POWERS[0]


# --- Streaming statistics -------------------------------------------------------------------------------


class _Moments:
    """Count, mean and sum of squared deviations, merged batch by batch (numerically stable)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        nb = len(values)
        if not nb:
            return
        mb = float(values.mean())
        d = values - mb
        m2b = float(np.square(d, out=d).sum())  # not d @ d: OpenBLAS's dispatch costs ten times more here
        if not self.n:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean += delta * nb / n
        self.m2 += m2b + delta * delta * self.n * nb / n
        self.n = n


class _Distinct:
    """Distinct values of one column, from their hashes.

    Exact up to DISTINCT_EXACT values, then estimated from the KMV_K smallest hashes. A column that may be an
    identifier (every value different so far) keeps all its hashes, so that "unique" is exact.
    """

    def __init__(self, may_be_unique: bool) -> None:
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.seen = 0
        self.kmv: np.ndarray | None = None
        self.everything: list[np.ndarray] | None = [] if may_be_unique else None

    def add(self, hashes: np.ndarray) -> None:
        """Hashes of values; one per row while the column may be unique (else repeats may be left out)."""
        if self.everything is not None:
            if self.seen + len(hashes) > UNIQUE_CHECK_ROWS:
                self.everything = None
            else:
                self.everything.append(hashes)
        self.seen += len(hashes)
        if self.kmv is not None:
            candidates = hashes[hashes < self.kmv[-1]] if len(self.kmv) >= KMV_K else hashes
            if len(candidates):
                self.kmv = _unique_sorted(np.concatenate([self.kmv, candidates]))[:KMV_K]
            return
        self.parts.append(hashes)
        self.size += len(hashes)
        if self.size > DISTINCT_EXACT:
            self._compact()

    def not_unique(self) -> None:
        self.everything = None

    def _compact(self) -> None:
        unique = _unique_sorted(np.concatenate(self.parts)) if self.parts else np.empty(0, np.uint64)
        if self.everything is not None and len(unique) < self.seen:
            self.everything = None  # a repeated value: not an identifier
        if len(unique) > DISTINCT_EXACT:
            self.kmv, self.parts = unique[:KMV_K], []
        else:
            self.parts = [unique]
        self.size = len(unique)

    def count(self) -> tuple[int, bool]:
        if self.everything is not None and self.kmv is not None:
            return len(_unique_sorted(np.concatenate(self.everything))), True
        if self.kmv is None:
            self._compact()
        if self.kmv is None:
            return self.size, True
        if len(self.kmv) < KMV_K:
            return len(self.kmv), True
        return int(round((KMV_K - 1) / (float(self.kmv[-1]) / 2.0**64))), False


class _Bitmap:
    """Which whole numbers of a range have been seen (one byte each): exact distinct counts of integers and
    dates without hashing or sorting, while the values are multiples of `step` (a day, for times) that span at
    most BITMAP_SPAN steps."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.base = 0
        self.bits: np.ndarray | None = None
        self.seen = 0

    def add(self, values: np.ndarray) -> bool:
        """Mark int64 values as seen; False (and nothing marked) when the range would grow too wide."""
        if not len(values):
            return True
        keys = values
        if self.step != 1:
            keys = values // self.step
            if np.any(values - keys * self.step):  # times that are not whole days
                return False
        lo, hi = int(keys.min()), int(keys.max())
        if self.bits is None:
            if hi - lo >= BITMAP_SPAN:
                return False
            self.base, self.bits = lo, np.zeros(min(BITMAP_SPAN, max(1024, 2 * (hi - lo + 1))), bool)
        elif lo < self.base or hi >= self.base + len(self.bits):
            top = self.base + len(self.bits) - 1
            new_lo, new_hi = min(lo, self.base), max(hi, top)
            if new_hi - new_lo >= BITMAP_SPAN:
                return False
            size = min(BITMAP_SPAN, max(new_hi - new_lo + 1, 2 * len(self.bits)))
            base = max(new_hi - size + 1, -(2**63)) if lo < self.base else new_lo  # room on the side that grew
            bits = np.zeros(size, bool)
            bits[self.base - base : self.base - base + len(self.bits)] = self.bits
            self.base, self.bits = base, bits
        self.bits[keys - self.base] = True
        self.seen += len(keys)
        return True

    def count(self) -> int:
        return 0 if self.bits is None else int(np.count_nonzero(self.bits))

    def values(self) -> np.ndarray:
        if self.bits is None:
            return np.empty(0, np.int64)
        return (np.flatnonzero(self.bits).astype(np.int64) + self.base) * self.step


def _unique_sorted(values: np.ndarray) -> np.ndarray:
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "time"
    if pa.types.is_null(t):
        return "null"
    return "str"


def _day(t: pa.DataType) -> int:
    """A day in the units of a time column's int64 values (dates are read as seconds); 1 for integers."""
    if pa.types.is_timestamp(t):
        return 86400 * {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[t.unit]
    return 86400 if pa.types.is_date(t) else 1


class _Column:
    """Everything profiled about one column, updated batch by batch."""

    def __init__(self, field: pa.Field) -> None:
        self.name = field.name
        self.type = field.type
        self.kind = _kind(field.type)
        self.missing = 0
        self.count = 0
        self.moments = _Moments() if self.kind in ("int", "float") else None
        self.lo = self.hi = None
        self.negatives = 0
        self.infinite = 0
        self.counts: dict | None = {}  # value -> count while the column has few distinct values
        self.text_hashes: dict[str, int] = {}  # text value -> hash, to seed the hash set if counting stops
        self.distinct = _Distinct(may_be_unique=self.kind in ("int", "str"))
        self.bitmap = _Bitmap(_day(field.type)) if self.kind in ("int", "time") else None
        self.dictionary_share = 0.0  # distinct values per row in the last dictionary-encoded batch
        self.result: tuple[int, bool] | None = None

    def update(self, arr: pa.Array) -> np.ndarray:
        """Take in one batch's values; return their hashes (used for duplicate rows)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if self.kind == "null" or arr.null_count == len(arr):
            self.missing += len(arr)
            return np.full(len(arr), _NULL, np.uint64)
        if self.kind == "str":
            return self._update_strings(arr)
        if self.kind == "bool":
            return self._update_bool(arr)
        return self._update_numbers(arr)

    def _update_numbers(self, arr: pa.Array) -> np.ndarray:
        if self.kind == "time":
            raw = (arr.cast(pa.timestamp("s")) if pa.types.is_date(arr.type) else arr).cast(pa.int64())
        elif self.kind == "int":
            raw = arr if arr.type == pa.int64() else arr.cast(pa.int64())
        else:
            raw = arr if arr.type == pa.float64() else arr.cast(pa.float64())
        valid = _valid(raw)
        x = _np(raw)
        if self.kind == "float":
            nan = np.isnan(x)
            if nan.any():  # NaN counts as missing, like a null
                valid = ~nan if valid is None else valid & ~nan
            hashes = _hash_bits(x + 0.0, _SALT["float"])  # + 0.0 makes -0.0 and 0.0 one value
        else:
            hashes = _hash_bits(x, _SALT[self.kind])
        v = x if valid is None else x[valid]
        if valid is not None:
            hashes[~valid] = _NULL
        self.count += len(v)
        self.missing += len(x) - len(v)
        if self.kind == "float":
            finite = np.isfinite(v)
            if not finite.all():
                self.infinite += int(len(v) - np.count_nonzero(finite))
                v = v[finite]
        if len(v):
            lo, hi = v.min(), v.max()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
            if self.moments is not None:
                if lo < 0:
                    self.negatives += int(np.count_nonzero(v < 0))
                self.moments.add(v.astype(np.float64, copy=False))
        counted = self.counts is not None and len(v) > 0 and self._count_numbers(raw, v, int(hi) - int(lo))
        if valid is not None:
            self.distinct.not_unique()
        if self.counts is None and not counted and not self._add_to_bitmap(v):
            self.distinct.add(hashes if valid is None else hashes[valid])
        return hashes

    def _add_to_bitmap(self, v: np.ndarray) -> bool:
        """Count integers or dates by bitmap; False once their range is too wide (then hashes take over)."""
        if self.bitmap is None:
            return False
        if self.bitmap.add(v):
            return True
        if self.bitmap.count() < self.bitmap.seen:
            self.distinct.not_unique()
        self.distinct.add(_hash_bits(self.bitmap.values(), _SALT[self.kind]))
        self.bitmap = None
        return False

    def _count_numbers(self, raw: pa.Array, v: np.ndarray, span: int) -> bool:
        """Count values one by one while there are few (whole numbers in a short range: a bincount).

        Returns whether this batch's values are accounted for (counted, or in the hash set seeded from counts).
        """
        distinct = TRACKED_VALUES + 1
        if self.kind != "float" and span < 1 << 16:
            lo = int(v.min())
            counted = np.bincount(v - lo)
            present = np.flatnonzero(counted)
            distinct = len(present)
            if distinct <= TRACKED_VALUES:
                for value, c in zip((present + lo).tolist(), counted[present].tolist(), strict=True):
                    self.counts[value] = self.counts.get(value, 0) + c
        else:
            counted = pc.value_counts(raw)
            distinct = len(counted)
            if distinct <= TRACKED_VALUES:
                values = counted.field("values").to_pylist()  # times stay ints until they are shown
                for value, c in zip(values, counted.field("counts").to_pylist(), strict=True):
                    if value is not None and value == value:  # not null, not NaN
                        self.counts[value] = self.counts.get(value, 0) + c
        merged = distinct <= TRACKED_VALUES
        if not merged or len(self.counts) > TRACKED_VALUES:
            self._stop_counting()
        return merged

    def _update_bool(self, arr: pa.Array) -> np.ndarray:
        valid = _valid(arr)
        x = _np(arr)
        hashes = np.where(x, _TRUE, _FALSE)
        if valid is not None:
            hashes[~valid] = _NULL
            x = x & valid
        n = len(arr) - arr.null_count
        trues = int(np.count_nonzero(x))
        self.count += n
        self.missing += arr.null_count
        for value, c in ((True, trues), (False, n - trues)):
            if c:
                self.counts[value] = self.counts.get(value, 0) + c
        return hashes

    def _update_strings(self, arr: pa.Array) -> np.ndarray:
        self.count += len(arr) - arr.null_count
        self.missing += arr.null_count
        if arr.null_count:
            self.distinct.not_unique()
        if self.counts is None and self.dictionary_share > 0.3:
            # Mostly different values: hash each one (cheaper than building a dictionary first).
            hashes = _hash_strings(arr)
            valid = _valid(arr)
            self.distinct.add(hashes if valid is None else hashes[valid])
            return hashes
        encoded = pc.dictionary_encode(arr)
        dictionary = encoded.dictionary
        self.dictionary_share = len(dictionary) / max(1, len(arr))
        indices = _np(encoded.indices)  # int32; a null's slot holds any value: replaced by the extra last index
        valid = _valid(encoded.indices)
        if valid is not None:
            indices = np.where(valid, indices, np.int32(len(dictionary)))
        hashes_of = np.append(_hash_strings(dictionary), _NULL)
        hashes = hashes_of[indices]
        if len(dictionary) < len(arr) - arr.null_count:
            self.distinct.not_unique()  # a value repeats within this batch
        merged = self.counts is not None and len(dictionary) <= TRACKED_VALUES
        if merged:
            counts = np.bincount(indices, minlength=len(dictionary) + 1)[:-1]
            for value, c, h in zip(dictionary.to_pylist(), counts.tolist(), hashes_of[:-1].tolist(), strict=True):
                if c:
                    self.counts[value] = self.counts.get(value, 0) + c
                    self.text_hashes[value] = h
            if len(self.counts) <= TRACKED_VALUES:
                return hashes
        if self.counts is not None:
            self._stop_counting()
        if not merged:
            self.distinct.add(hashes_of[:-1])
        return hashes

    def _stop_counting(self) -> None:
        """Too many distinct values to count one by one: seed the hash set with those seen so far."""
        if self.counts:
            keys = list(self.counts)
            if max(self.counts.values()) > 1:
                self.distinct.not_unique()
            if self.kind == "str":
                self.distinct.add(np.array([self.text_hashes[k] for k in keys], np.uint64))
            elif self.kind == "float":
                self.distinct.add(_hash_bits(np.array(keys, np.float64) + 0.0, _SALT["float"]))
            elif not self._add_to_bitmap(np.array(keys, np.int64)):
                self.distinct.add(_hash_bits(np.array(keys, np.int64), _SALT[self.kind]))
        self.counts = None
        self.text_hashes = {}

    def finish(self) -> None:
        """The distinct count (sorting the hash set is the expensive part: done in the pool, at the end)."""
        if self.counts is not None:
            self.result = (len(self.counts), True)
        elif self.bitmap is not None:
            self.result = (self.bitmap.count(), True)
        else:
            self.result = self.distinct.count()
        self.distinct = self.bitmap = None


# --- Sample ---------------------------------------------------------------------------------------------


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


# --- The profile ----------------------------------------------------------------------------------------


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
    """Profile the rows in `batches` (one schema) in a single pass; see the module docstring.

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


def _row_hash(hashes: list[np.ndarray], n: int) -> np.ndarray:
    h = np.zeros(n, np.uint64)
    for column_hashes in hashes:
        h *= _ROW
        h += column_hashes
    return _mix(h)


def _empty_profile() -> dict:
    return {
        "row_count": 0,
        "column_count": 0,
        "duplicate_rows": 0,
        "sampled_rows": 0,
        "columns": [],
        "correlations": {"columns": [], "matrix": []},
        "warnings": [],
    }


def _summarise(columns: list[_Column], sampled: list, sampled_rows: int, rows: int, row_hashes, schema, pool) -> dict:
    warnings = list(json.loads((schema.metadata or {}).get(readers.WARNINGS_KEY, b"[]")))
    work = [(column, sampled[i], rows) for i, column in enumerate(columns)]
    results = list(pool.map(_describe, *zip(*work, strict=True))) if pool is not None and work else []
    if pool is None:
        results = [_describe(*args) for args in work]
    described = [info for info, _ in results]
    for _, column_warnings in results:
        warnings.extend(column_warnings)
    duplicates = _duplicate_rows(described, row_hashes, rows)
    if duplicates:
        warnings.insert(
            0,
            _warning(
                None, "duplicates", f"{duplicates:,} rows ({_pct(duplicates, rows)}) are exact copies of an earlier row"
            ),
        )
    elif duplicates is None:
        warnings.insert(
            0, _warning(None, "duplicates", f"Duplicate rows were not counted (more than {ROW_HASH_LIMIT:,} rows)")
        )
    return {
        "row_count": rows,
        "column_count": len(columns),
        "duplicate_rows": duplicates,
        "sampled_rows": sampled_rows,
        "columns": described,
        "correlations": _correlations(columns, described, sampled),
        "warnings": warnings,
    }


def _duplicate_rows(described: list[dict], row_hashes, rows: int) -> int | None:
    if any(c["distinct"] == rows and c["distinct_is_exact"] and not c["missing"] for c in described):
        return 0  # a column with a different value in every row: no two rows are equal
    if row_hashes is None:
        return None
    if not row_hashes:
        return 0
    return rows - len(_unique_sorted(np.concatenate(row_hashes)))


def _warning(column: str | None, kind: str, message: str) -> dict:
    return {"column": column, "kind": kind, "message": message}


def _pct(part: int, whole: int) -> str:
    share = 100 * part / whole if whole else 0.0
    if share >= 10 or share == int(share):
        return f"{share:.0f}%"
    return f"{share:.1f}%" if share >= 0.1 else "<0.1%"


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _number(x, kind: str):
    return int(x) if kind == "int" else _f(x)


def _logical_type(column: _Column, distinct: int) -> str:
    if column.kind == "str":
        small = column.counts is not None and distinct <= CATEGORICAL_MAX
        return "categorical" if small and distinct <= max(1, column.count // 2) else "text"
    return {"int": "integer", "float": "float", "bool": "boolean", "time": "datetime", "null": "text"}[column.kind]


def _describe(column: _Column, sampled: pa.Array, rows: int) -> tuple[dict, list[dict]]:
    distinct, exact = column.result
    logical = _logical_type(column, distinct)
    values = _sample_values(column, sampled)
    info = {
        "name": column.name,
        "type": logical,
        "arrow_type": str(column.type),
        "missing": column.missing,
        "missing_pct": round(100 * column.missing / rows, 2) if rows else 0.0,
        "distinct": distinct,
        "distinct_is_exact": exact,
        "numeric": None,
        "datetime": None,
        "top_values": _top_values(column),
        "histogram": None,
        "pii": None,
    }
    if column.moments is not None and column.lo is not None:
        m = column.moments
        quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(values) else [None] * 5
        info["numeric"] = {
            "min": _number(column.lo, column.kind),
            "max": _number(column.hi, column.kind),
            "mean": _f(m.mean),
            "std": _f(math.sqrt(m.m2 / (m.n - 1))) if m.n > 1 else None,
            "quantiles": {
                k: (None if q is None else _f(q))
                for k, q in zip(("p5", "p25", "p50", "p75", "p95"), quantiles, strict=True)
            },
        }
        info["histogram"] = _numeric_histogram(column, values)
    elif column.kind == "time" and column.lo is not None:
        info["datetime"] = {"min": _iso(column.lo, column.type), "max": _iso(column.hi, column.type)}
        info["histogram"] = _time_histogram(column, values)
    info["pii"] = _pii(column, sampled)
    warnings: list[dict] = []
    _column_warnings(column, info, rows, sampled, warnings)
    return info, warnings


def _sample_values(column: _Column, sampled: pa.Array) -> np.ndarray:
    """The sample's non-missing finite values as a NumPy array (int64 for times, float64 for numbers)."""
    if column.kind not in ("int", "float", "time") or not len(sampled):
        return np.empty(0)
    if column.kind == "time":
        arr = sampled.cast(pa.timestamp("s")) if pa.types.is_date(sampled.type) else sampled
        return _np(arr.cast(pa.int64()).drop_null())
    x = _np(sampled.cast(pa.float64()).drop_null())
    return x[np.isfinite(x)]


def _top_values(column: _Column) -> list[dict] | None:
    if column.counts is None or not column.counts:
        return None
    labelled = [(_text(value, column), count) for value, count in column.counts.items()]
    ranked = sorted(labelled, key=lambda vc: (-vc[1], vc[0]))[:TOP_VALUES]
    return [{"value": value, "count": int(count)} for value, count in ranked]


def _text(value, column: _Column) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if column.kind == "time":
        return _iso(value, column.type)
    return str(value)


def _largest_remainder(weights: np.ndarray, total: int) -> list[int]:
    """Scale sample counts to `total` exactly."""
    if not total or weights.sum() == 0:
        return [0] * len(weights)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short:
        counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return counts.tolist()


def _numeric_histogram(column: _Column, values: np.ndarray) -> dict | None:
    total = column.count - column.infinite
    if not len(values) or not total:
        return None
    edges = _nice_edges(float(column.lo), float(column.hi), whole=column.kind == "int")
    if len(edges) > 2 or edges[0] != edges[-1]:
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    else:
        counts = np.array([len(values)])
    return {
        "edges": [int(e) if column.kind == "int" else _f(e) for e in edges],
        "counts": _largest_remainder(counts, total),
    }


def _nice_edges(lo: float, hi: float, *, whole: bool) -> np.ndarray:
    """About HISTOGRAM_BINS bins with round edges: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if whole and hi - lo < HISTOGRAM_BINS:
        return np.arange(lo, hi + 2)  # one bar per whole number
    if hi <= lo:
        return np.array([lo, hi])
    raw = (hi - lo) / HISTOGRAM_BINS
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw and (not whole or m * power >= 1))
    if whole:
        step = max(1.0, round(step))
    start, stop = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = max(1, round((stop - start) / step))
    decimals = max(0, 2 - math.floor(math.log10(step)))
    return np.round(start + step * np.arange(count + 1), decimals)


_PERIODS = [("h", 3600), ("D", 86400), ("M", 86400 * 31), ("Y", 86400 * 366)]


def _time_histogram(column: _Column, values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    unit = column.type.unit if pa.types.is_timestamp(column.type) else "s"
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    span = (int(column.hi) - int(column.lo)) / per_second
    period = next((p for p, seconds in _PERIODS if span / seconds <= 60), "Y")
    stamps = values.astype(f"datetime64[{unit}]")
    lo = np.datetime64(int(column.lo), unit).astype(f"datetime64[{period}]")
    hi = np.datetime64(int(column.hi), unit).astype(f"datetime64[{period}]")
    periods = np.arange(lo, hi + 1)
    counts = np.bincount(np.searchsorted(periods, stamps.astype(f"datetime64[{period}]")), minlength=len(periods))
    labels = periods.astype("datetime64[m]" if period == "h" else "datetime64[D]")
    return {
        "periods": [str(p) for p in np.datetime_as_string(labels)],
        "counts": _largest_remainder(counts[: len(periods)], column.count),
    }


def _iso(value, t: pa.DataType) -> str:
    unit = t.unit if pa.types.is_timestamp(t) else "s"
    text = str(np.datetime_as_string(np.datetime64(int(value), unit)))
    return text + ("Z" if pa.types.is_timestamp(t) and t.tz else "")


def _pii(column: _Column, sampled: pa.Array) -> dict | None:
    if column.kind in ("float", "bool", "null") or not len(sampled):
        return None
    if column.kind != "str" and not pii.hinted_kinds(column.name):
        return None  # numbers and dates are personal data only when the name says so (zip, phone, dob)
    arr = sampled.drop_null().slice(0, PII_VALUES)
    if column.kind == "time":
        arr = arr.cast(pa.timestamp("s")).cast(pa.date32()) if pa.types.is_timestamp(arr.type) else arr
    return pii.detect_array(column.name, arr.cast(pa.string()))


_NON_NEGATIVE = (
    r"(^|_)(age|ages|count|counts|qty|quantity|quantities|price|prices|amount|income|salary|wage|weight|height|"
    r"length|width|depth|duration|distance|size|year|years|days|hours|minutes|seconds|n|num|number)(_|$)"
)


def _column_warnings(column: _Column, info: dict, rows: int, sampled, warnings: list[dict]) -> None:
    name = column.name
    add = warnings.append
    if rows and column.missing == rows:
        add(_warning(name, "empty", f"`{name}` is empty: every value is missing"))
        return
    if rows and column.missing / rows >= 0.05:
        add(_warning(name, "missing", f"{_pct(column.missing, rows)} of `{name}` is missing"))
    if info["distinct"] == 1 and rows > 1:
        single = info["top_values"][0]["value"] if info["top_values"] else None
        add(_warning(name, "constant", f"`{name}` has a single value" + (f" ({single})" if single else "")))
    if (
        column.kind in ("int", "str")
        and rows >= 10
        and not column.missing
        and info["distinct_is_exact"]
        and info["distinct"] == rows
    ):
        add(_warning(name, "identifier", f"`{name}` is unique: probably an identifier"))
    if column.negatives:
        normalised = re.sub(r"[^0-9a-z]+", "_", name.lower())
        if re.search(_NON_NEGATIVE, normalised) or column.negatives <= 0.01 * column.count:
            add(_warning(name, "negative", f"`{name}` has negative values ({_plural(column.negatives, 'row')})"))
    if column.infinite:
        add(
            _warning(
                name,
                "infinite",
                f"`{name}` has {_plural(column.infinite, 'infinite value')}; the statistics leave them out",
            )
        )
    if info["type"] == "text" and CATEGORICAL_MAX < info["distinct"] <= column.count // 2:  # repeats, too many
        add(
            _warning(
                name,
                "high_cardinality",
                f"`{name}` has {info['distinct']:,} different values: it is treated as free text, not as a category",
            )
        )
    if info["pii"]:
        label = pii.KIND_LABELS.get(info["pii"]["kind"], info["pii"]["kind"])
        add(_warning(name, "pii", f"`{name}` looks like personal data ({label}): hidden from viewers"))
    if column.kind == "str" and len(sampled):
        _formula_warning(name, sampled, add)


def _formula_warning(name: str, sampled: pa.Array, add) -> None:
    risky = sampled.filter(pc.fill_null(pc.match_substring_regex(sampled, r"^(?:[=@\t\r]|[+-][^\d\s.,])"), False))
    if len(risky):
        example = risky[0].as_py()
        example = example if len(example) <= 40 else example[:37] + "…"
        add(
            _warning(
                name,
                "formula",
                f"`{name}` has values that start with =, +, - or @ (e.g. “{example}”). The portal stores and shows "
                "them as plain text and never runs them, but a spreadsheet may treat them as formulas: take care "
                "when opening exported data in Excel",
            )
        )


def _correlations(columns: list[_Column], described: list[dict], sampled: list) -> dict:
    """Pearson correlations between numeric columns on the sample, each pair over rows where both are present."""
    chosen = [
        i
        for i, (c, d) in enumerate(zip(columns, described, strict=True))
        if c.kind in ("int", "float") and d["numeric"] and d["distinct"] > 1
    ][:MAX_CORRELATION_COLUMNS]
    if len(chosen) < 2 or not len(sampled[chosen[0]]):
        return {"columns": [], "matrix": []}
    x = np.column_stack([_np(sampled[i].cast(pa.float64()).fill_null(np.nan)) for i in chosen])
    present = np.isfinite(x)
    centred = np.where(present, x - np.nanmean(np.where(present, x, np.nan), axis=0), 0.0)
    m = present.astype(np.float64)
    n = m.T @ m
    sx = centred.T @ m  # sx[i, j]: sum of x_i over rows where x_i and x_j are present
    sxx = (centred * centred).T @ m
    sxy = centred.T @ centred
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sxy - sx * sx.T / n
        var_i = sxx - sx * sx / n
        r = cov / np.sqrt(var_i * var_i.T)
    matrix = []
    for a in range(len(chosen)):
        row = []
        for b in range(len(chosen)):
            value = 1.0 if a == b else r[a, b]
            row.append(round(float(value), 4) if n[a, b] >= 3 and math.isfinite(value) else None)
        matrix.append(row)
    return {"columns": [described[i]["name"] for i in chosen], "matrix": matrix}
