"""Benchmark the data grid (apps/datasets/grid/): page requests on a generated 1M x 20 Parquet file.

Run from the repository root:

    .venv/bin/python bench/bench_grid.py [--rows N] [--repeat R] [--page-size S] [--json]

The file is generated (seeded, in a child process so its memory is not counted here) into a temporary
directory, written the way profiling writes its Parquet copy (zstd, one row group per 64k-row batch), and
removed at the end. A second copy is encrypted with apps.core.storage under a throwaway key, as stored
files are when PORTAL_ENCRYPTION_KEY is set; Django is configured just enough for that (no database).

Three measurements:

1. cold: the first request for a version this process has not cached, repeated R times with the cache
   emptied before each: plain pages (page 1, the middle and the last page), which are read from the row
   groups that hold them while the whole version loads in the background, and a sorted page, which has to
   wait for that load; from the plain file and through the decrypting stream that storage.open_stream
   returns for an encrypted one;
2. warm: each kind of request below, R times, with the version in the cache. The first of the R requests
   of a kind also pays for what that kind builds lazily and keeps (a text column's index or prefix keys);
   it is reported on its own as well as in the percentiles.
3. the process's resident memory after loading and after the requests, and its peak.

The target (issue 3) is under 200 ms for every page request; a sorted or filtered request that has to wait
for the version to load (cold_load_*) is reported without a verdict.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from apps.datasets import grid  # noqa: E402 - after the path is set

TARGET_MS = 200.0


@dataclass
class Timing:
    kind: str
    description: str
    requests: int
    total_rows: int
    first_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float


# --- The data -----------------------------------------------------------------------------------------------


def generate(path: Path, rows: int, seed: int = 20260101) -> None:
    """20 columns: integers, floats, categorical and free text, dates, timestamps, booleans; some nulls."""
    rng = np.random.default_rng(seed)

    def with_nulls(values, share: float) -> pa.Array:
        return pa.array(values, mask=rng.random(rows) < share)

    def pick(choices: list[str], share_null: float = 0.0) -> pa.Array:
        return with_nulls(np.array(choices)[rng.integers(0, len(choices), rows)], share_null)

    first_names = ["Alice", "Bob", "Chloé", "David", "Emma", "Félix", "Grace", "Hugo", "Inès", "Jules"]
    names = np.char.add(np.char.add(np.array(first_names)[rng.integers(0, 10, rows)], " "),
                        rng.integers(0, 100_000, rows).astype(str))
    table = pa.table({
        "id": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
        "age": with_nulls(rng.integers(18, 90, rows), 0.05),
        "income": with_nulls(rng.lognormal(10, 1, rows).round(2), 0.10),
        "score": pa.array(rng.normal(0, 1, rows)),
        "balance": with_nulls(rng.normal(1000, 5000, rows).round(2), 0.02),
        "visits": pa.array(rng.poisson(3, rows).astype(np.int64)),
        "rating": with_nulls(rng.integers(1, 6, rows), 0.20),
        "category": pick([f"cat_{i}" for i in range(10)], 0.03),
        "region": pick([f"Region {i:02d}" for i in range(50)]),
        "status": pick(["active", "churned", "trial", "paused", "closed"]),
        "product": pick([f"Product-{i:03d}" for i in range(200)], 0.01),
        "city": pick([f"City{i:04d}" for i in range(1000)]),
        "name": pa.array(names),
        "email": pa.array(np.char.add(np.char.add("user", np.arange(rows).astype(str)), "@example.com")),
        "signup_date": pa.array(np.datetime64("2015-01-01") + rng.integers(0, 3650, rows).astype("timedelta64[D]")),
        "last_login": with_nulls(np.datetime64("2020-01-01T00:00:00")
                                 + rng.integers(0, 5 * 365 * 86400, rows).astype("timedelta64[s]"), 0.05),
        "is_active": pa.array(rng.random(rows) < 0.7),
        "opted_in": with_nulls(rng.random(rows) < 0.4, 0.10),
        "ratio": with_nulls(rng.random(rows), 0.05),
        "comment": pick(["great service", "too slow", "ok", "would recommend", "Needs work", "n/a"], 0.30),
    })
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for batch in table.to_batches(max_chunksize=65_536):
            writer.write_batch(batch)


# --- The requests -------------------------------------------------------------------------------------------


DATE_FILTERS = {"signup_date": ">=2020-03", "last_login": "<2022"}


def request_kinds(pages: int, date_pages: int) -> list[tuple[str, str, dict]]:
    """(kind, description, read_page arguments); `pages` is the unfiltered page count, `date_pages` that of
    the date filters.
    """
    middle = max(1, pages // 2)
    two_filters = {"income": ">50000", "region": "Region 1"}
    return [
        ("first_page", "page 1, file order", {"page": 1}),
        ("middle_page", f"page {middle}", {"page": middle}),
        ("last_page", f"page {pages}", {"page": pages}),
        ("sort_number_asc", f"sort income ascending, page {middle}", {"page": middle, "sort": "income"}),
        ("sort_number_desc", f"sort income descending, page {middle}",
         {"page": middle, "sort": "income", "descending": True}),
        ("sort_number_desc_first", "sort income descending, page 1",
         {"page": 1, "sort": "income", "descending": True}),
        ("sort_text_asc", f"sort product (200 values) ascending, page {middle}", {"page": middle, "sort": "product"}),
        ("sort_text_desc", f"sort product descending, page {pages}",
         {"page": pages, "sort": "product", "descending": True}),
        ("sort_free_text_asc", f"sort name (free text, ~630k distinct) ascending, page {middle}",
         {"page": middle, "sort": "name"}),
        ("sort_free_text_desc", "sort email (unique) descending, page 2",
         {"page": 2, "sort": "email", "descending": True}),
        ("filter_one", "category contains “cat_3”, page 10", {"page": 10, "filters": {"category": "cat_3"}}),
        ("filter_one_free_text", "name contains “ali”, page 10", {"page": 10, "filters": {"name": "ali"}}),
        ("filter_two", "income >50000 and region contains “Region 1”, page 20",
         {"page": 20, "filters": two_filters}),
        ("filter_two_sorted", "the same two filters, sorted by last_login descending, page 20",
         {"page": 20, "filters": two_filters, "sort": "last_login", "descending": True}),
        ("filter_dates_sorted", f"signup_date >=2020-03 and last_login <2022, sorted by age, page {date_pages}",
         {"page": date_pages, "filters": DATE_FILTERS, "sort": "age"}),
    ]


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def timed(kind: str, description: str, call, repeat: int, setup=None) -> Timing:
    latencies, total = [], 0
    for _ in range(repeat):
        if setup is not None:
            setup()
        started = time.perf_counter()
        total = call().total
        latencies.append((time.perf_counter() - started) * 1000)
    ordered = sorted(latencies)
    return Timing(kind=kind, description=description, requests=repeat, total_rows=total,
                  first_ms=round(latencies[0], 1), p50_ms=round(percentile(ordered, 0.5), 1),
                  p95_ms=round(percentile(ordered, 0.95), 1), max_ms=round(ordered[-1], 1))


def encrypted_copy(path: Path, media: Path) -> str:
    """Store `path` with apps.core.storage under a throwaway key; return its storage name."""
    from django.conf import settings

    settings.configure(MEDIA_ROOT=str(media), PORTAL_ENCRYPTION_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode())
    from apps.core import storage

    with path.open("rb") as handle:
        stored = storage.save_stream("bench", iter(lambda: handle.read(1 << 20), b""), filename=path.name)
    assert stored.encrypted
    return stored.name


def run(path: Path, encrypted_name: str, repeat: int, page_size: int) -> tuple[list[Timing], list[Timing], dict]:
    from apps.core import storage

    def opener():
        return path.open("rb")

    key = "bench-version"

    def encrypted():
        return storage.open_stream(encrypted_name)

    total_pages = -(-pq.ParquetFile(path).metadata.num_rows // page_size)
    middle = max(1, total_pages // 2)
    # Each cold request starts with an empty cache (clear_cache first waits for the previous request's
    # background load); a plain page also starts that load, which runs alongside it, as in a web process.
    cold = [
        timed("cold_page_1", "empty cache: page 1 (from its row groups; the version loads alongside)",
              lambda: grid.read_page(key, opener, page_size=page_size), repeat, setup=grid.clear_cache),
        timed("cold_middle_page", f"empty cache: page {middle:,}",
              lambda: grid.read_page(key, opener, page=middle, page_size=page_size), repeat, setup=grid.clear_cache),
        timed("cold_last_page", f"empty cache: page {total_pages:,}",
              lambda: grid.read_page(key, opener, page=total_pages, page_size=page_size), repeat,
              setup=grid.clear_cache),
        timed("cold_page_1_encrypted", "empty cache: page 1 through the decrypting stream",
              lambda: grid.read_page(key, encrypted, page_size=page_size), repeat, setup=grid.clear_cache),
        timed("cold_load_sorted", "empty cache: sorted by income (reads the whole file first)",
              lambda: grid.read_page(key, opener, page_size=page_size, sort="income"), repeat,
              setup=grid.clear_cache),
        timed("cold_load_encrypted", "empty cache: sorted by income through the decrypting stream",
              lambda: grid.read_page(key, encrypted, page_size=page_size, sort="income"), repeat,
              setup=grid.clear_cache),
    ]
    memory = {"rss_mb_after_load": rss_mb(), "arrow_mb_after_load": arrow_mb()}
    pages = grid.read_page(key, opener, page_size=page_size).pages
    date_pages = grid.read_page(key, opener, page_size=page_size, filters=DATE_FILTERS).pages
    warm = []
    for kind, description, arguments in request_kinds(pages, date_pages):
        warm.append(timed(kind, description, lambda a=arguments: grid.read_page(key, opener, page_size=page_size, **a),
                          repeat))
    # "Any page": random pages of a sorted, filtered view.
    rng = random.Random(7)  # noqa: S311 - page numbers, not secrets
    filtered_pages = grid.read_page(key, opener, page_size=page_size, filters={"status": "active"}).pages
    warm.append(timed("random_pages", "status contains “active”, sorted by balance, a random page each time",
                      lambda: grid.read_page(key, opener, page_size=page_size, filters={"status": "active"},
                                             sort="balance", page=rng.randint(1, filtered_pages)),
                      repeat))
    memory |= {"rss_mb_after_requests": rss_mb(), "arrow_mb_after_requests": arrow_mb(),
               "peak_rss_mb": peak_rss_mb()}
    return cold, warm, memory


# --- Machine facts and output -------------------------------------------------------------------------------


def _status_kb(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float("nan")


def rss_mb() -> float:
    return round(_status_kb("VmRSS") / 1024, 1)


def arrow_mb() -> float:
    """Memory Arrow has allocated and not freed (the cached table and its lazy keys held as Arrow arrays)."""
    return round(pa.total_allocated_bytes() / 1e6, 1)


def peak_rss_mb() -> float:
    return round(_status_kb("VmHWM") / 1024, 1)


def print_table(facts: dict, data: dict, cold: list[Timing], warm: list[Timing], memory: dict) -> None:
    for key, value in (facts | data | memory).items():
        print(f"{key:>22}: {value}")
    print()
    header = f"{'request':<26} {'rows matched':>12} {'first ms':>9} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  target"
    print(header)
    print("-" * len(header))
    for t in [*cold, *warm]:
        verdict = "" if t.kind.startswith("cold_load") else ("ok" if t.max_ms < TARGET_MS else "MISSED")
        print(f"{t.kind:<26} {t.total_rows:>12,} {t.first_ms:>9.1f} {t.p50_ms:>8.1f} {t.p95_ms:>8.1f} "
              f"{t.max_ms:>8.1f}  {verdict}")
    print()
    for t in [*cold, *warm]:
        print(f"{t.kind:<26} {t.description}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the generated file (default 1M)")
    parser.add_argument("--repeat", type=int, default=10, help="requests per kind (default 10)")
    parser.add_argument("--page-size", type=int, default=50, help="rows per page (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or not 1 <= args.page_size <= grid.MAX_PAGE_SIZE:
        parser.error(f"--rows and --repeat must be at least 1, --page-size between 1 and {grid.MAX_PAGE_SIZE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.generate_into:
        generate(args.generate_into, args.rows)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="portal-bench-grid-"))
    try:
        path = workdir / "rows.parquet"
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--generate-into", str(path)],
                       check=True)
        metadata = pq.ParquetFile(path).metadata
        data = {"rows": metadata.num_rows, "columns": metadata.num_columns, "row_groups": metadata.num_row_groups,
                "parquet_mb": round(path.stat().st_size / 1e6, 1),
                "generate_s": round(time.perf_counter() - started, 1), "page_size": args.page_size,
                "rss_mb_before": rss_mb()}
        encrypted_name = encrypted_copy(path, workdir / "media")
        cold, warm, memory = run(path, encrypted_name, args.repeat, args.page_size)
        data["table_mb_in_memory"] = round(grid.cache._cache["bench-version"].nbytes / 1e6, 1)
    finally:
        grid.clear_cache()
        shutil.rmtree(workdir, ignore_errors=True)

    facts = machine_facts(pyarrow=pa.__version__, numpy=np.__version__)
    missed = [t.kind for t in warm if t.max_ms >= TARGET_MS]
    if args.json:
        print(json.dumps({"machine": facts, "data": data, "memory": memory, "target_ms": TARGET_MS,
                          "cold": [asdict(t) for t in cold], "warm": [asdict(t) for t in warm],
                          "missed": missed}, indent=2))
    else:
        print_table(facts, data, cold, warm, memory)
        print()
        print(f"warm requests over {TARGET_MS:.0f} ms: {', '.join(missed) if missed else 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
