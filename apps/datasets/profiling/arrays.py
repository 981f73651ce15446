"""Arrow arrays as NumPy views, and 64-bit hashes of values (the same value always gets the same hash)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def _row_hash(hashes: list[np.ndarray], n: int) -> np.ndarray:
    h = np.zeros(n, np.uint64)
    for column_hashes in hashes:
        h *= _ROW
        h += column_hashes
    return _mix(h)


def _unique_sorted(values: np.ndarray) -> np.ndarray:
    values = np.sort(values)
    if len(values) < 2:
        return values
    keep = np.empty(len(values), bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]

