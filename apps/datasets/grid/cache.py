"""The per-process LRU cache of versions' rows, each read once from its Parquet copy."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import BinaryIO

import pyarrow.parquet as pq

from .columns import _Version

# Each cached version costs about its in-memory size (a 1M x 20 table is ~200 MB), in every web process.
CACHE_ENTRIES = 4
CACHE_BYTES = 2 * 1024**3


def clear_cache() -> None:
    with _lock:
        _cache.clear()


_cache: OrderedDict[str, _Version] = OrderedDict()
_lock = threading.Lock()


def _cached_version(key: str, opener: Callable[[], BinaryIO]) -> _Version:
    with _lock:
        version = _cache.get(key)
        if version is not None:
            _cache.move_to_end(key)
            return version
    # Read outside the lock so a cold version does not stall requests for warm ones. Two requests racing
    # for the same cold version both read it; the later one simply replaces the earlier in the cache.
    # ParquetFile.read, not read_table: read_table's pre-buffering on a Python file object leaves pyarrow
    # I/O threads behind that abort the interpreter at exit (pyarrow 25).
    with opener() as handle:
        version = _Version(pq.ParquetFile(handle).read())
    with _lock:
        _cache[key] = version
        _cache.move_to_end(key)
        while len(_cache) > 1 and (len(_cache) > CACHE_ENTRIES or sum(v.nbytes for v in _cache.values()) > CACHE_BYTES):
            _cache.popitem(last=False)
    return version
