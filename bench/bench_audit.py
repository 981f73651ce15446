"""Benchmark the audit trail: appending to the hash chain and verifying it.

Run from the repository root:

    DEBUG=1 .venv/bin/python bench/bench_audit.py [--events N] [--writers W] [--json]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/portal_bench DEBUG=1 .venv/bin/python bench/bench_audit.py

It never touches the developer's database. On SQLite (DATABASE_URL unset or sqlite://) the whole
PORTAL_VAR_DIR, and so the database file, is a fresh temporary directory. On PostgreSQL the database
named in DATABASE_URL is never opened: the script connects to the server's `postgres` database, creates
`bench_portal_<pid>`, points Django at it and drops it at the end. Migrations are applied to it first.

Three measurements:

1. one writer: N record() calls, each in its own transaction, as the services make them;
2. W writer threads, each appending about N/W events, then verify_chain() must report the chain intact;
3. verify_chain() over the whole resulting chain (2N events), extrapolated to one million events.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Throughput:
    events: int
    seconds: float
    events_per_s: float
    p50_ms: float
    p95_ms: float
    max_ms: float


@dataclass
class Verification:
    ok: bool
    events: int
    seconds: float
    events_per_s: float
    s_per_million: float
    reason: str = ""


# --- Throwaway database ---------------------------------------------------------------------------------


class ThrowawayDatabase:
    """Prepare the environment so Django only ever sees a database made for this run, and remove it after."""

    def __init__(self) -> None:
        self.var_dir = Path(tempfile.mkdtemp(prefix="portal-bench-")).resolve()
        self.pg_params: dict | None = None
        self.pg_name = f"bench_portal_{os.getpid()}"

    def prepare(self) -> None:
        """Set PORTAL_VAR_DIR (and, for PostgreSQL, DATABASE_URL) before django.setup()."""
        os.environ["PORTAL_VAR_DIR"] = str(self.var_dir)
        url = os.environ.get("DATABASE_URL", "")
        if not url or url.startswith("sqlite:"):
            # The settings' default is a SQLite file under PORTAL_VAR_DIR, i.e. in the temporary directory.
            os.environ.pop("DATABASE_URL", None)
            return
        if urlsplit(url).scheme not in {"postgres", "postgresql", "pgsql"}:
            raise SystemExit(f"bench_audit: only SQLite and PostgreSQL are supported, not {urlsplit(url).scheme}")
        self._create_postgres(url)

    def _create_postgres(self, url: str) -> None:
        import dj_database_url
        import psycopg
        from psycopg import sql

        parsed = dj_database_url.parse(url)
        self.pg_params = {
            "host": parsed.get("HOST") or None,
            "port": parsed.get("PORT") or None,
            "user": parsed.get("USER") or None,
            "password": parsed.get("PASSWORD") or None,
        }
        with psycopg.connect(dbname="postgres", autocommit=True, **self.pg_params) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.pg_name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pg_name)))
        parts = urlsplit(url)
        os.environ["DATABASE_URL"] = urlunsplit(parts._replace(path=f"/{self.pg_name}"))

    def check(self) -> None:
        """Refuse to go on unless Django's default database is the one made here."""
        from django.db import connection

        name = str(connection.settings_dict["NAME"])
        expected = self.pg_name if self.pg_params is not None else str(self.var_dir)
        if (self.pg_params is not None and name != expected) or (self.pg_params is None and expected not in name):
            raise SystemExit(f"bench_audit: refusing to run against {name!r}")

    def cleanup(self) -> None:
        from django.apps import apps
        from django.db import connections

        if apps.ready:
            connections.close_all()
        if self.pg_params is not None:
            import psycopg
            from psycopg import sql

            with psycopg.connect(dbname="postgres", autocommit=True, **self.pg_params) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.pg_name)))
        shutil.rmtree(self.var_dir, ignore_errors=True)


def setup_django(db: ThrowawayDatabase) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    db.prepare()

    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    # DEBUG=1 only supplies the development SECRET_KEY; production runs with DEBUG off, so do not measure
    # the debug cursor's per-query logging too.
    settings.DEBUG = False
    db.check()
    call_command("migrate", verbosity=0)


# --- Measurements ---------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def summarise(latencies_ns: list[int], seconds: float) -> Throughput:
    ms = sorted(v / 1e6 for v in latencies_ns)
    return Throughput(
        events=len(ms),
        seconds=round(seconds, 3),
        events_per_s=round(len(ms) / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(ms, 0.50), 3),
        p95_ms=round(percentile(ms, 0.95), 3),
        max_ms=round(ms[-1], 3) if ms else 0.0,
    )


def append_events(count: int, writer: int) -> list[int]:
    """record() `count` events, each in its own transaction; return the per-call latencies in ns."""
    from django.db import transaction

    from apps.audit.services import record

    latencies = []
    for i in range(count):
        started = time.perf_counter_ns()
        with transaction.atomic():
            record(
                "bench.append",
                actor_label=f"bench-writer-{writer}",
                details={"writer": writer, "i": i, "note": "benchmark event", "metrics": {"auc": 0.91}},
                client_ip="10.0.0.1",
            )
        latencies.append(time.perf_counter_ns() - started)
    return latencies


def bench_single_writer(events: int) -> Throughput:
    started = time.perf_counter()
    latencies = append_events(events, writer=0)
    return summarise(latencies, time.perf_counter() - started)


def bench_concurrent_writers(events: int, writers: int) -> Throughput:
    from django.db import connection

    shares = [events // writers + (1 if w < events % writers else 0) for w in range(writers)]
    results: list[list[int]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(writers + 1)

    def work(writer: int) -> None:
        try:
            barrier.wait()
            results[writer] = append_events(shares[writer], writer=writer + 1)
        except BaseException as exc:  # reported below; a silent thread would fake a fast run
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=work, args=(w,), name=f"writer-{w + 1}") for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} writer thread(s) failed: {errors[0]!r}") from errors[0]
    return summarise([v for r in results for v in r], seconds)


def bench_verify() -> Verification:
    from apps.audit.services import verify_chain

    started = time.perf_counter()
    report = verify_chain()
    seconds = time.perf_counter() - started
    rate = report.events / seconds if seconds else 0.0
    return Verification(
        ok=report.ok,
        events=report.events,
        seconds=round(seconds, 3),
        events_per_s=round(rate, 1),
        s_per_million=round(1_000_000 / rate, 1) if rate else 0.0,
        reason=report.reason,
    )


# --- Machine facts and output -----------------------------------------------------------------------------


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path` (longest mount point prefix in /proc/mounts)."""
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1]
            if str(path).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
                best, fstype = mount, fields[2]
    except (OSError, IndexError):
        pass
    return fstype


def database_facts(db: ThrowawayDatabase) -> dict:
    import django
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            storage = f"synchronous_commit={cursor.fetchone()[0]}"
    else:
        version = sqlite3.sqlite_version
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
        storage = f"file on {filesystem_of(db.var_dir)}, journal_mode={journal}"
    return {
        "database": f"{connection.vendor} {version}",
        "database_storage": storage,
        "django": django.get_version(),
    }


def print_table(facts: dict, single: Throughput, concurrent: Throughput, writers: int,
                after_concurrent: Verification, verify: Verification) -> None:
    for key, value in facts.items():
        print(f"{key:>17}: {value}")
    print()
    header = (f"{'measurement':<28} {'events':>8} {'seconds':>8} {'events/s':>10} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    print(header)
    print("-" * len(header))
    for label, t in (("append, 1 writer", single), (f"append, {writers} writers", concurrent)):
        print(f"{label:<28} {t.events:>8} {t.seconds:>8.2f} {t.events_per_s:>10.0f} "
              f"{t.p50_ms:>8.2f} {t.p95_ms:>8.2f} {t.max_ms:>8.2f}")
    print(f"{'verify_chain()':<28} {verify.events:>8} {verify.seconds:>8.2f} {verify.events_per_s:>10.0f}")
    print()
    status = "ok" if after_concurrent.ok else f"BROKEN: {after_concurrent.reason}"
    print(f"chain after concurrent writers: {status} ({after_concurrent.events} events)")
    print(f"verify_chain(): {verify.s_per_million:.1f} s per 1M events (extrapolated, linear)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="events per phase (default 5000)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer threads (default 8)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.events < 1 or args.writers < 1:
        parser.error("--events and --writers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    db = ThrowawayDatabase()
    try:
        setup_django(db)
        facts = machine_facts() | database_facts(db)
        single = bench_single_writer(args.events)
        concurrent = bench_concurrent_writers(args.events, args.writers)
        after_concurrent = bench_verify()
        verify = bench_verify()  # a second, warm walk over the same chain is the number reported
    finally:
        db.cleanup()

    if args.json:
        print(json.dumps({
            "machine": facts,
            "parameters": {"events": args.events, "writers": args.writers},
            "single_writer": asdict(single),
            "concurrent_writers": asdict(concurrent) | {"writers": args.writers, "chain_ok": after_concurrent.ok},
            "verify_chain": asdict(verify),
        }, indent=2))
    else:
        print_table(facts, single, concurrent, args.writers, after_concurrent, verify)
    return 0 if after_concurrent.ok and verify.ok else 1


if __name__ == "__main__":
    sys.exit(main())
