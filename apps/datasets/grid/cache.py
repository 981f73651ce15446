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
    wait_for_warming()
    with _lock:
        _cache.clear()


def wait_for_warming(timeout: float = 30) -> None:
    """Wait until the versions being loaded in the background are in the cache (or failed)."""
    with _lock:
        threads = list(_warming)
    for thread in threads:
        thread.join(timeout)


_cache: OrderedDict[str, _Version] = OrderedDict()
_lock = threading.Lock()


_loading: dict[str, threading.Lock] = {}
_warming: set[threading.Thread] = set()


def _cached_version(key: str, opener: Callable[[], BinaryIO], *, background: bool = False) -> _Version:
    with _lock:
        version = _cache.get(key)
        if version is not None:
            _cache.move_to_end(key)
            return version
        loading = _loading.setdefault(key, threading.Lock())
    # One reader per cold version (others wait for it), outside the cache lock so a cold version does not
    # stall requests for warm ones.
    with loading:
        with _lock:
            version = _cache.get(key)
        if version is not None:
            return version
        # ParquetFile.read, not read_table: read_table's pre-buffering on a Python file object leaves pyarrow
        # I/O threads behind that abort the interpreter at exit (pyarrow 25).
        # A background load decodes on one thread, leaving the other cores to the requests it runs beside.
        with opener() as handle:
            version = _Version(pq.ParquetFile(handle).read(use_threads=not background))
        with _lock:
            _cache[key] = version
            _cache.move_to_end(key)
            _loading.pop(key, None)
            while len(_cache) > 1 and (len(_cache) > CACHE_ENTRIES
                                       or sum(v.nbytes for v in _cache.values()) > CACHE_BYTES):
                _cache.popitem(last=False)
    return version


def is_cached(key: str) -> bool:
    with _lock:
        return key in _cache


def warm(key: str, opener: Callable[[], BinaryIO]) -> None:
    """Start loading a version in the background (the explore page calls this before its grid asks)."""
    with _lock:
        if key in _cache or key in _loading:
            return
        _loading[key] = threading.Lock()  # so that the next request waits for this load, not a second one
        thread = threading.Thread(target=_warm, args=(key, opener), name=f"grid-warm-{key[:8]}", daemon=True)
        _warming.add(thread)
    thread.start()


def _warm(key: str, opener: Callable[[], BinaryIO]) -> None:
    try:
        _cached_version(key, opener, background=True)
    except Exception:  # the real request will report the problem
        with _lock:
            _loading.pop(key, None)
    finally:
        with _lock:
            _warming.discard(threading.current_thread())
