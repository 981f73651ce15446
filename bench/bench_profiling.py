"""Benchmark dataset profiling against pandas on a generated CSV (issue: at most 1.5x, memory under 2x the file).

Run from the repository root:

    .venv/bin/python bench/bench_profiling.py [--rows 1000000] [--repeat 3] [--json]

It writes a seeded CSV (numbers, categories, dates, missing values and personal data such as e-mail
addresses, phone numbers and names; 20 columns) into a temporary directory, then alternates, --repeat
times, between two kinds of fresh subprocess:

- baseline: `pandas.read_csv(path, engine=...)` + `DataFrame.describe()`, for engine "c" and "pyarrow";
- profiling: `read_batches(file, "csv", lambda b: profile_batches(b, total_bytes=size))` (reading included),
  as the profiling job calls it.

Each subprocess imports its libraries and warms up on a small file before it starts the clock, as a
long-lived Celery worker would have, and reports its wall time and its own peak RSS: VmHWM from /proc
(ru_maxrss would carry over the parent's peak through fork and exec; it is the fallback without /proc), so
the baseline's memory never mixes with the profiler's. The data is generated in a subprocess too. The best
time of each kind is compared: the target is profiling <= 1.5 x the faster pandas engine, and the
profiler's peak RSS < 2 x the file size.
Nothing outside the temporary directory is touched; it is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
TIME_TARGET = 1.5
MEMORY_TARGET = 2.0

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
kind, path, warm = sys.argv[1], sys.argv[2], sys.argv[3]

def peak_mb():
    # VmHWM: this process's own peak. ru_maxrss would carry over the parent's peak through fork and exec.
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if kind == "profile":
    import os
    from apps.datasets.profiling import profile_batches
    from apps.datasets.readers import read_batches

    def run(p):
        with open(p, "rb") as f:
            return read_batches(f, "csv", lambda batches: profile_batches(batches, total_bytes=os.path.getsize(p)))
else:
    import pandas as pd

    def run(p):
        return pd.read_csv(p, engine=kind).describe()

run(warm)
start = time.perf_counter()
result = run(path)
seconds = time.perf_counter() - start
out = {{"seconds": seconds, "peak_rss_mb": peak_mb()}}
if kind == "profile":
    out["rows"] = result["row_count"]
    out["duplicate_rows"] = result["duplicate_rows"]
    out["pii"] = {{c["name"]: c["pii"]["kind"] for c in result["columns"] if c["pii"]}}
print(json.dumps(out))
"""


def generate(path: Path, rows: int, seed: int = 42) -> None:
    """A realistic 20-column CSV: ids, PII, numbers with missing values, categories, dates, free text."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    first = np.array(
        [
            "James",
            "Mary",
            "John",
            "Patricia",
            "Robert",
            "Jennifer",
            "Michael",
            "Linda",
            "David",
            "Elizabeth",
            "William",
            "Barbara",
            "Richard",
            "Susan",
            "Joseph",
            "Jessica",
            "Thomas",
            "Sarah",
            "Charles",
            "Karen",
        ]
    )
    last = np.array(
        [
            "Smith",
            "Johnson",
            "Williams",
            "Brown",
            "Jones",
            "Garcia",
            "Miller",
            "Davis",
            "Rodriguez",
            "Martinez",
            "Hernandez",
            "Lopez",
            "Gonzalez",
            "Wilson",
            "Anderson",
            "Thomas",
            "Taylor",
            "Moore",
            "Jackson",
            "Martin",
        ]
    )
    fi, li = rng.integers(0, len(first), rows), rng.integers(0, len(last), rows)
    ids = np.arange(1, rows + 1)

    def join(*parts):
        out = parts[0]
        for part in parts[1:]:
            out = np.char.add(out, part)
        return out

    def with_missing(values, share):
        return pa.array(values, mask=rng.random(rows) < share)

    words = np.array(
        [
            "lorem",
            "ipsum",
            "dolor",
            "sit",
            "amet",
            "consectetur",
            "adipiscing",
            "elit",
            "sed",
            "do",
            "eiusmod",
            "tempor",
        ]
    )
    cities = np.array(
        ["London", "Paris", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo"]
        + [f"Town{i}" for i in range(190)]
    )
    digits = rng.integers(0, 256, (rows, 3)).astype(str)
    table = pa.table(
        {
            "id": ids,
            "name": join(first[fi], " ", last[li]),
            "email": with_missing(
                join(np.char.lower(first[fi]), ".", np.char.lower(last[li]), ids.astype(str), "@example.com"), 0.02
            ),
            "phone": with_missing(
                join("+1-555-", np.char.zfill(rng.integers(0, 10_000_000, rows).astype(str), 7)), 0.05
            ),
            "age": with_missing(rng.integers(18, 90, rows), 0.01),
            "income": with_missing(np.round(rng.lognormal(10.5, 0.6, rows), 2), 0.15),
            "score": np.round(rng.normal(600, 80, rows), 3),
            "balance": np.round(rng.normal(1000, 3000, rows), 2),
            "n_children": rng.poisson(1.2, rows),
            "is_active": rng.random(rows) < 0.7,
            "tier": np.array(["bronze", "silver", "gold", "platinum", "none"])[rng.integers(0, 5, rows)],
            "region": np.array([f"region_{i:02d}" for i in range(50)])[rng.integers(0, 50, rows)],
            "city": with_missing(cities[rng.integers(0, len(cities), rows)], 0.03),
            "product_code": join("PRD-", np.char.zfill(rng.integers(0, 20_000, rows).astype(str), 5)),
            "signup_date": pa.array(np.datetime64("2015-01-01") + rng.integers(0, 3650, rows).astype("timedelta64[D]")),
            "last_login": pa.array(
                np.datetime64("2024-01-01T00:00:00") + rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")
            ),
            "ip_address": join("10.", digits[:, 0], ".", digits[:, 1], ".", digits[:, 2]),
            "zip": np.char.zfill(rng.integers(501, 99_950, rows).astype(str), 5),
            "rating": with_missing(rng.integers(1, 6, rows).astype(float), 0.3),
            "notes": with_missing(
                join(
                    words[rng.integers(0, 12, rows)],
                    " ",
                    words[rng.integers(0, 12, rows)],
                    " ",
                    words[rng.integers(0, 12, rows)],
                ),
                0.4,
            ),
        }
    )
    pacsv.write_csv(table, path)


def child(kind: str, path: Path, warm: Path) -> dict:
    code = _CHILD.format(root=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", code, kind, str(path), str(warm)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_profiling: the {kind} subprocess failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import numpy
    import pandas
    import pyarrow

    return machine_facts(pyarrow=pyarrow.__version__, pandas=pandas.__version__, numpy=numpy.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each kind; the best time counts")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    parser.add_argument("--generate-into", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_into:
        generate(Path(args.generate_into), args.rows, seed=args.seed)
        return

    tmp = Path(tempfile.mkdtemp(prefix="portal-bench-profiling-"))
    try:
        path, warm = tmp / "data.csv", tmp / "warm.csv"
        started = time.perf_counter()
        for target, rows, seed in ((path, args.rows, 42), (warm, 2_000, 7)):
            subprocess.run(
                [sys.executable, __file__, "--generate-into", str(target), "--rows", str(rows), "--seed", str(seed)],
                check=True,
            )
        generated = time.perf_counter() - started
        size = path.stat().st_size
        runs: dict[str, list[dict]] = {"c": [], "pyarrow": [], "profile": []}
        for _ in range(args.repeat):
            for kind in ("c", "pyarrow", "profile"):
                runs[kind].append(child(kind, path, warm))
        best = {kind: min(r["seconds"] for r in results) for kind, results in runs.items()}
        baseline_engine = min(("c", "pyarrow"), key=best.get)
        ratio = best["profile"] / best[baseline_engine]
        peak_mb = max(r["peak_rss_mb"] for r in runs["profile"])
        memory_ratio = peak_mb * 2**20 / size
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "rows": args.rows,
            "columns": 20,
            "file_mb": round(size / 1e6, 1),
            "generate_s": round(generated, 1),
            "repeat": args.repeat,
            "seconds": {kind: [round(r["seconds"], 3) for r in results] for kind, results in runs.items()},
            "best_s": {kind: round(v, 3) for kind, v in best.items()},
            "baseline_engine": baseline_engine,
            "ratio": round(ratio, 2),
            "time_target_met": ratio <= TIME_TARGET,
            "profile_peak_rss_mb": round(peak_mb, 1),
            "baseline_peak_rss_mb": {k: round(max(r["peak_rss_mb"] for r in runs[k]), 1) for k in ("c", "pyarrow")},
            "memory_ratio": round(memory_ratio, 2),
            "memory_target_met": memory_ratio < MEMORY_TARGET,
            "profile_found": {k: runs["profile"][-1][k] for k in ("rows", "duplicate_rows", "pii")},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    m = result["machine"]
    print(
        f"Machine: {m['cpu']} ({m['cores']} cores), {m['os']}, Python {m['python']}, pyarrow {m['pyarrow']}, "
        f"pandas {m['pandas']}, numpy {m['numpy']}"
    )
    print(f"Date: {result['date']}")
    print(f"File: {args.rows:,} rows x 20 columns, {result['file_mb']} MB CSV (generated in {generated:.1f} s)")
    for kind, label in (
        ("c", "pandas read_csv(engine='c') + describe()"),
        ("pyarrow", "pandas read_csv(engine='pyarrow') + describe()"),
        ("profile", "read_batches(..., profile_batches)"),
    ):
        times = ", ".join(f"{s:.2f}" for s in result["seconds"][kind])
        print(f"  {label:50s} best {best[kind]:.2f} s   (runs: {times})")
    print(
        f"Ratio to the faster pandas engine ({baseline_engine}): {ratio:.2f}x  "
        f"(target <= {TIME_TARGET}x: {'met' if result['time_target_met'] else 'MISSED'})"
    )
    print(
        f"Profiling peak RSS: {peak_mb:.0f} MB = {memory_ratio:.2f}x the file  "
        f"(target < {MEMORY_TARGET}x: {'met' if result['memory_target_met'] else 'MISSED'}); "
        f"pandas peak RSS: c {result['baseline_peak_rss_mb']['c']:.0f} MB, "
        f"pyarrow {result['baseline_peak_rss_mb']['pyarrow']:.0f} MB"
    )


if __name__ == "__main__":
    main()
