"""What is counted about each column, batch by batch: moments, min/max, distinct values, top values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .arrays import _FALSE, _NULL, _SALT, _TRUE, _hash_bits, _hash_strings, _np, _unique_sorted, _valid

TRACKED_VALUES = 1_000  # distinct values counted one by one (exact top values); beyond that, hashes
DISTINCT_EXACT = 100_000  # distinct values counted exactly; beyond that, estimated
KMV_K = 4096  # k-minimum-values estimate: about 1.6% error
BITMAP_SPAN = 1 << 22  # whole numbers (and days) in a range this wide are counted exactly, by a bitmap
UNIQUE_CHECK_ROWS = 20_000_000  # rows up to which an all-distinct integer or text column is checked exactly


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
