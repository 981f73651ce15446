"""Load test (issue 9): people browsing the UI and API and applications calling a deployment, all at once, against
the production stack on loopback: gunicorn (gunicorn.conf.py) + PostgreSQL + Redis + a Celery worker and beat.

Run from the repository root (`make bench-load`, or):

    .venv/bin/python bench/bench_load.py [--duration 300] [--ui-users 50] [--predict-users 20] [--json PATH]

End to end, and everything it starts is stopped at the end (also on Ctrl-C, a failure or a timeout):

1. A fresh PostgreSQL database (portal_load on --database-url's server: dropped if it exists, created, and
   dropped again at the end unless --keep), and a temporary PORTAL_VAR_DIR (MLflow store, static files, logs).
   The two Redis databases (--broker-url, --redis-url) must be empty; they are flushed at the end.
2. Setup, with the processes' own production-like environment (DEBUG=0, a throwaway SECRET_KEY and encryption
   key, ALLOWED_HOSTS, Redis for the cache, the rate limits and the prediction log): migrate, collectstatic, the
   demo loaders `make demo` runs (load_demo, load_demo_models, load_demo_approvals, load_demo_deployments), then
   bench/load/setup.py: the serving benchmark's model (a 100-tree random forest on scikit-learn's breast-cancer
   data, as in bench_serving.py) imported and deployed to an ungated environment, one deployment key per
   prediction client, and the browsing people (members of the demo project with an API token each).
3. Three gunicorns as docker-compose.yml runs them (the repository's gunicorn.conf.py: one process per CPU,
   4 threads each): `web` for pages (nice 5), `api` for the API calls and `serving` (PORTAL_SERVICE=serving) for
   the predictions, as the reverse proxy routes them; `celery worker` and `celery beat` (nice 5; beat drains the
   prediction log every PORTAL_PREDICTION_DRAIN_SECONDS, as in production).
4. locust, headless, with bench/load/locustfile.py: --ui-users browsers (1-3 s think time) and --predict-users
   prediction clients (0.1-0.5 s between calls) for --duration seconds after the ramp.
5. The prediction log is drained by beat; its rows for the benchmark deployment must equal the answers.

Prints a markdown table (p50/p95/p99/max, requests, throughput and errors for UI, API and predictions), writes
the JSON result (--json, default var/bench/load.json) and exits non-zero on any failed request, a prediction
log that does not match, or a step that did not finish in time. A missed latency target is printed, not fatal.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOAD_DIR = Path(__file__).resolve().parent / "load"
TARGETS_P99_MS = {"api": 300.0, "predict": 100.0}
GROUPS = ("ui", "api", "predict", "login")
SETUP_TIMEOUT = 900  # migrate + the demo loaders (which train and profile) on a slow, busy machine
START_TIMEOUT = 120
DRAIN_TIMEOUT = 180


def fail(message: str) -> None:
    raise SystemExit(f"bench_load: {message}")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of the sorted values (exact: every request's own time)."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


# --- Processes ---------------------------------------------------------------------------------------------


class Processes:
    """Every process the run starts, each in a session of its own so that stopping it stops its children."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict, logfile: Path) -> subprocess.Popen:
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.running.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name, proc in reversed(self.running):
            if proc.poll() is None:
                log(f"stopping {name} (pid {proc.pid})")
            self.stop(proc)
        self.running.clear()


# --- The run -----------------------------------------------------------------------------------------------


class LoadRun:
    def __init__(self, args) -> None:
        self.args = args
        self.procs = Processes()
        self.dir = Path(tempfile.mkdtemp(prefix="portal-bench-load-")).resolve()
        self.var = self.dir / "var"
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True)
        self.pg_params: dict | None = None
        self.redis_clients: list = []
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.serving_port = free_port() if args.serving_pool else self.port
        self.serving_host = f"http://127.0.0.1:{self.serving_port}"
        self.api_port = free_port() if args.api_pool else self.port
        self.api_host = f"http://127.0.0.1:{self.api_port}"
        self.cpu = CpuMeter()
        self.secret_key = secrets.token_urlsafe(50)
        self.encryption_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self.password = secrets.token_urlsafe(18)
        self.static_root: Path | None = None

    # State ---------------------------------------------------------------------------------------------------

    def make_database(self) -> None:
        import dj_database_url
        import psycopg
        from psycopg import sql

        url = self.args.database_url
        if urlsplit(url).scheme not in {"postgres", "postgresql", "pgsql"}:
            fail("--database-url must be a postgres:// URL (the load test measures the production stack)")
        parsed = dj_database_url.parse(url)
        self.db_name = parsed["NAME"] or "portal_load"
        self.database_url = urlunsplit(urlsplit(url)._replace(path=f"/{self.db_name}"))
        params = {"host": parsed.get("HOST") or None, "port": parsed.get("PORT") or None,
                  "user": parsed.get("USER") or None, "password": parsed.get("PASSWORD") or None}
        with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10, **params) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db_name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
            self.pg_version = conn.execute("SHOW server_version").fetchone()[0]
        self.pg_params = params
        log(f"database {self.db_name} created (PostgreSQL {self.pg_version})")

    def check_redis(self) -> None:
        import redis

        for url in (self.args.broker_url, self.args.redis_url):
            client = redis.Redis.from_url(url, socket_timeout=5)
            size = client.dbsize()
            if size:
                fail(f"{url} holds {size} keys: another process uses that Redis database. Give the load test "
                     "empty databases of its own (--broker-url, --redis-url), e.g. redis://127.0.0.1:6379/12 and /13.")
            self.redis_clients.append(client)
        self.redis_version = self.redis_clients[0].info("server").get("redis_version", "?")

    def env(self) -> dict:
        """The portal processes' environment: production-like, on plain HTTP over loopback."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MLFLOW_", "DATABASE_", "REDIS_", "CELERY_", "WEB_", "PORTAL_"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "portal.settings", "PYTHONPATH": str(REPO_ROOT),
            "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
            "DEBUG": "0", "SECRET_KEY": self.secret_key, "PORTAL_ENCRYPTION_KEY": self.encryption_key,
            "ALLOWED_HOSTS": "127.0.0.1,localhost", "PORTAL_VAR_DIR": str(self.var),
            "DATABASE_URL": self.database_url, "DATABASE_CONN_MAX_AGE": "60",  # as docker-compose.yml
            "CELERY_BROKER_URL": self.args.broker_url, "REDIS_URL": self.args.redis_url,
            "WEB_BIND": f"127.0.0.1:{self.port}", "DEMO_PASSWORD": self.password,
            # TLS ends at the reverse proxy in production; here the client speaks plain HTTP to gunicorn, so the
            # redirect to HTTPS and the Secure flag on cookies (which a client would not send back) are off.
            "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
        })
        if self.static_root is not None:
            env["STATIC_ROOT"] = str(self.static_root)
        if self.args.web_concurrency:
            env["WEB_CONCURRENCY"] = str(self.args.web_concurrency)
        if self.args.web_threads:
            env["WEB_THREADS"] = str(self.args.web_threads)
        if self.args.serving_pool:  # as docker-compose.yml: predictions go to `serving`, web loads no model
            env["WEB_WARM_MODELS"] = "0"
        return env

    def serving_env(self) -> dict:
        """The serving-only gunicorn's environment (docker-compose's `serving` service)."""
        env = {**self.env(), "PORTAL_SERVICE": "serving", "WEB_BIND": f"127.0.0.1:{self.serving_port}",
               "WEB_CONCURRENCY": str(self.args.serving_processes), "WEB_WARM_MODELS": "1"}  # 0: one per CPU
        env.pop("WEB_THREADS", None)
        if self.args.serving_threads:
            env["WEB_THREADS"] = str(self.args.serving_threads)
        return env

    def api_env(self) -> dict:
        """The API gunicorn's environment (docker-compose's `api` service: the same app, reached for /api/)."""
        env = {**self.env(), "WEB_BIND": f"127.0.0.1:{self.api_port}",
               "WEB_CONCURRENCY": str(self.args.api_processes)}  # 0: one per CPU
        env.pop("WEB_THREADS", None)
        if self.args.api_threads:
            env["WEB_THREADS"] = str(self.args.api_threads)
        return env

    def manage(self, *argv: str, timeout: float = SETUP_TIMEOUT) -> str:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "manage.py", *argv], cwd=REPO_ROOT, env=self.env(),
                                capture_output=True, text=True, timeout=timeout)
        with open(self.logs / "setup.log", "a") as out:
            out.write(f"$ manage.py {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            fail(f"manage.py {' '.join(argv)} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
        log(f"manage.py {argv[0]}: {time.monotonic() - started:.1f} s")
        return result.stdout

    def collect_static(self) -> None:
        """Static files as production serves them (WhiteNoise's compressed manifest), kept between runs under
        var/bench/load-static/<fingerprint of the sources>: collecting compresses ~1,200 files (minutes)."""
        result = subprocess.run([sys.executable, str(LOAD_DIR / "setup.py"), "--static-fingerprint"], cwd=REPO_ROOT,
                                env=self.env(), capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            fail(f"could not fingerprint the static files:\n{result.stderr[-4000:]}")
        cache = REPO_ROOT / "var" / "bench" / "load-static"
        target = cache / result.stdout.strip().splitlines()[-1]
        if (target / "staticfiles.json").exists():
            log(f"static files: reusing {target}")
        else:
            for old in cache.glob("*") if cache.exists() else []:  # one copy (~100 MB) is enough
                shutil.rmtree(old, ignore_errors=True)
            building = cache / f"building-{os.getpid()}"
            self.static_root = building
            self.manage("collectstatic", "--noinput")
            building.rename(target)
        self.static_root = target

    def setup(self) -> dict:
        self.manage("migrate", "--noinput")
        self.collect_static()
        for command in ("load_demo", "load_demo_models", "load_demo_approvals", "load_demo_deployments"):
            self.manage(command)
        plan_path = self.dir / "plan.json"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, str(LOAD_DIR / "setup.py"), "--out", str(plan_path), "--browsers",
             str(self.args.ui_users), "--predict-keys", str(self.args.predict_users), f"--password={self.password}"],
            cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True, timeout=SETUP_TIMEOUT)
        with open(self.logs / "setup.log", "a") as out:
            out.write(f"$ bench/load/setup.py\n{result.stdout}{result.stderr}\n")
        if result.returncode != 0:
            fail(f"bench/load/setup.py failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
        log(f"benchmark model deployed, {self.args.ui_users} people and {self.args.predict_users} keys made: "
            f"{time.monotonic() - started:.1f} s")
        self.plan_path = plan_path
        return json.loads(plan_path.read_text())

    # Servers -------------------------------------------------------------------------------------------------

    def start_servers(self) -> None:
        env = self.env()
        gunicorn = [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "portal.wsgi:application"]
        web_nice = ["nice", "-n", str(self.args.web_nice)] if self.args.web_nice else []
        self.web = self.procs.start("gunicorn", [*web_nice, *gunicorn], env, self.logs / "gunicorn.log")
        if self.args.serving_pool:
            self.procs.start("gunicorn (serving)", gunicorn, self.serving_env(), self.logs / "serving.log")
        if self.args.api_pool:
            self.procs.start("gunicorn (api)", gunicorn, self.api_env(), self.logs / "api.log")
        # As docker-compose.yml: background jobs yield the CPU to people and applications waiting for an answer.
        nice = ["nice", "-n", str(self.args.worker_nice)] if self.args.worker_nice else []
        self.procs.start("celery worker", [*nice, str(BIN / "celery"), "-A", "portal", "worker", "--loglevel=INFO",
                                           f"--concurrency={self.args.worker_concurrency}"],
                         env, self.logs / "worker.log")
        self.procs.start("celery beat", [*nice, str(BIN / "celery"), "-A", "portal", "beat", "--loglevel=INFO"],
                         env, self.logs / "beat.log")
        deadline = time.monotonic() + START_TIMEOUT
        self._wait_for(self.host, self.logs / "gunicorn.log", deadline, warms=not self.args.serving_pool)
        if self.args.serving_pool:
            self._wait_for(self.serving_host, self.logs / "serving.log", deadline, warms=True)
        if self.args.api_pool:
            self._wait_for(self.api_host, self.logs / "api.log", deadline, warms=not self.args.serving_pool)

    def _wait_for(self, host: str, logfile: Path, deadline: float, warms: bool) -> None:
        while time.monotonic() < deadline:
            for name, proc in self.procs.running:
                if proc.poll() is not None:
                    fail(f"{name} exited with {proc.returncode} at start-up; see {self.logs}")
            try:
                with urllib.request.urlopen(f"{host}/healthz", timeout=5) as answer:  # noqa: S310 (our http URL)
                    if answer.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            fail(f"gunicorn did not answer /healthz within {START_TIMEOUT} s; see {logfile}")
        # Each worker loads the active deployments' models in a thread after it starts (gunicorn.conf.py); a
        # measurement during that would time the loading, which production does once per worker start.
        while time.monotonic() < deadline:
            text = logfile.read_text(errors="replace")
            booted = text.count("Booting worker")
            if booted and (not warms or text.count("warmed ") + text.count("could not list deployments") >= booted):
                log(f"gunicorn answers on {host}; {booted} workers" + (" have loaded the models" if warms else ""))
                return
            time.sleep(0.5)
        fail(f"gunicorn's workers did not load the models within {START_TIMEOUT} s; see {logfile}")

    def run_locust(self) -> dict:
        args = self.args
        result_path = self.dir / "locust-result.json"
        users = args.ui_users + args.predict_users
        env = {**os.environ, "LOAD_PLAN": str(self.plan_path), "LOAD_RESULT": str(result_path),
               "LOAD_PREDICT_HOST": self.serving_host, "LOAD_API_HOST": self.api_host,
               "LOAD_UI_USERS": str(args.ui_users), "LOAD_PREDICT_USERS": str(args.predict_users),
               "LOAD_DURATION": str(args.duration), "LOAD_UI_WAIT": args.ui_wait,
               "LOAD_PREDICT_WAIT": args.predict_wait, "LOAD_SETTLE": str(args.settle),
               "LOAD_READY_TIMEOUT": str(math.ceil(users / args.spawn_rate) + 180)}
        # The locustfile stops the run `duration` seconds after the ramp; --run-time is only the backstop.
        ramp = math.ceil(users / args.spawn_rate) + args.settle + 180
        argv = [str(BIN / "locust"), "-f", str(LOAD_DIR / "locustfile.py"), "--headless", "--host", self.host,
                "--users", str(users), "--spawn-rate", str(args.spawn_rate), "--run-time",
                f"{int(args.duration + ramp + 180)}s", "--stop-timeout", "10", "--only-summary",
                "--loglevel", "WARNING", "--exit-code-on-error", "0"]
        log(f"locust: {args.ui_users} browsers + {args.predict_users} prediction clients, "
            f"{args.duration:.0f} s after the ramp")
        proc = self.procs.start("locust", argv, env, self.logs / "locust.log")
        self.cpu.start(self.procs)
        try:
            proc.wait(timeout=args.duration + ramp + 300)
        except subprocess.TimeoutExpired:
            fail(f"locust did not finish in time; see {self.logs / 'locust.log'}")
        finally:
            self.cpu.stop()
        if not result_path.exists():
            fail(f"locust wrote no result (exit {proc.returncode}); see {self.logs / 'locust.log'}")
        return json.loads(result_path.read_text())

    def verify_log(self) -> dict:
        """Wait for beat to drain the prediction log, then count the benchmark deployment's rows."""
        log("waiting for beat to drain the prediction log")
        result = subprocess.run([sys.executable, str(LOAD_DIR / "setup.py"), "--count-log",
                                 "--timeout", str(DRAIN_TIMEOUT), "--out", str(self.plan_path)],
                                cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True,
                                timeout=DRAIN_TIMEOUT + 60)
        if result.returncode != 0:
            fail(f"counting the prediction log failed:\n{result.stderr[-4000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def access_log_5xx(self) -> int:
        count = 0
        for path in (self.logs / "gunicorn.log", self.logs / "serving.log", self.logs / "api.log"):
            if not path.exists():
                continue
            with open(path, errors="replace") as handle:
                for line in handle:
                    parts = line.split('" ', 1)
                    if len(parts) == 2 and parts[1][:1] == "5" and "rid=" in line:
                        count += 1
        return count

    def cleanup(self) -> None:
        self.procs.stop_all()
        for client in self.redis_clients:
            try:
                client.flushdb()
            except Exception as exc:  # the run's result matters more than a failed clean-up; say so
                log(f"could not flush Redis: {exc}")
        if self.pg_params is not None and not self.args.keep:
            import psycopg
            from psycopg import sql

            try:
                with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=10,
                                     **self.pg_params) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(self.db_name)))
            except Exception as exc:
                log(f"could not drop database {self.db_name}: {exc}")
        if self.args.keep:
            # The environment the portal ran with (its keys too: the datasets are encrypted), to look at it again.
            (self.dir / "env.json").write_text(json.dumps({k: v for k, v in self.env().items()
                                                           if os.environ.get(k) != v}, indent=1))
            log(f"kept: database {self.db_name}, files, logs and env.json in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


class CpuMeter:
    """CPU time used by each part of the stack, sampled every second from /proc while locust runs (Linux only).

    The parts: the processes this run started (each in a session of its own: gunicorn and its workers, the Celery
    worker and its children, beat, locust), PostgreSQL's and Redis's server processes by name; and the machine's
    busy share of all its CPUs from /proc/stat."""

    def __init__(self) -> None:
        # (time, CPU s by part, busy, total, stolen: the hypervisor ran someone else while this VM wanted the CPU)
        self.samples: list[tuple[float, dict[str, float], float, float, float]] = []
        self._stop = None
        self._thread = None

    def start(self, procs: Processes) -> None:
        import threading

        if not Path("/proc/stat").exists():
            return
        self._sessions = {proc.pid: name for name, proc in procs.running}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.samples.append(self._sample())
            self._stop.wait(1.0)

    def _sample(self):
        tick = os.sysconf("SC_CLK_TCK")
        parts: dict[str, float] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            session = int(fields[3])  # fields from the state on: state, ppid, pgrp, session, ...
            part = self._sessions.get(session)
            if part is None:
                part = "postgresql" if name.startswith(("postgres", "postmaster")) else \
                    "redis" if name.startswith("redis-server") else None
            if part is not None:
                parts[part] = parts.get(part, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = cpu[3] + cpu[4]  # user nice system idle iowait irq softirq steal ...
        steal = cpu[7] if len(cpu) > 7 else 0
        return time.time(), parts, (sum(cpu) - idle - steal) / tick, sum(cpu) / tick, steal / tick

    def between(self, start: float, end: float) -> dict | None:
        """Cores used by each part (CPU seconds per second) between two wall-clock times, and the machine's busy
        share; None without samples."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        seconds = last[0] - first[0]
        cores = {part: round((last[1].get(part, 0.0) - first[1].get(part, 0.0)) / seconds, 3)
                 for part in sorted(last[1])}
        total = max(1e-9, last[3] - first[3])
        return {"seconds": round(seconds, 1), "cores_by_part": cores,
                "machine_busy": round((last[2] - first[2]) / total, 3),
                "stolen": round((last[4] - first[4]) / total, 3)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Results -----------------------------------------------------------------------------------------------


def group_of(name: str) -> str:
    return name.split(":", 1)[0]


def summarise(samples: list[list], seconds: float) -> dict:
    times = sorted(s[3] for s in samples)
    errors = sum(1 for s in samples if s[4])
    return {"requests": len(samples), "errors": errors,
            "error_rate": errors / len(samples) if samples else 0.0,
            "rps": len(samples) / seconds if seconds > 0 else 0.0,
            "p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95), "p99_ms": percentile(times, 99),
            "max_ms": times[-1] if times else float("nan"),
            "mean_ms": sum(times) / len(times) if times else float("nan")}


def analyse(raw: dict) -> dict:
    """Per group, the requests sent in the measured phase; the ramp (sign-ins, cold caches) apart."""
    state = raw["state"]
    start, end = state["measure_start"] or float("inf"), state["measure_end"] or float("inf")
    seconds = end - start if start < end < float("inf") else 0.0

    def phase(sent: float) -> str:
        return "ramp" if sent < start else "measure" if sent < end else "after"

    samples = [[phase(s[1]), *s] for s in raw["samples"]]  # [phase, name, sent, ms, failed, status]
    measured = [s for s in samples if s[0] == "measure"]
    out = {"measured_seconds": seconds, "ready_timeout": state["ready_timeout"], "groups": {}, "endpoints": {},
           "ramp": {}, "all_phases": {}, "ramp_seconds": (start - state["started"]) if seconds else None}
    for group in GROUPS:
        rows = [s for s in measured if group_of(s[1]) == group]
        if rows:
            out["groups"][group] = summarise(rows, seconds)
        everything = [s for s in samples if group_of(s[1]) == group]
        if everything:
            out["all_phases"][group] = {"requests": len(everything), "errors": sum(1 for s in everything if s[4]),
                                        "ok": sum(1 for s in everything if not s[4])}
        ramp = [s for s in samples if s[0] == "ramp" and group_of(s[1]) == group]
        if ramp and out["ramp_seconds"]:
            out["ramp"][group] = summarise(ramp, out["ramp_seconds"])
    for name in sorted({s[1] for s in measured}):
        out["endpoints"][name] = summarise([s for s in measured if s[1] == name], seconds)
    out["errors"] = raw["errors"]
    return out


def fmt(value: float, digits: int = 1) -> str:
    return "" if value != value else f"{value:,.{digits}f}"  # NaN -> empty


def table(result: dict) -> str:
    labels = {"ui": "UI pages", "api": "API (token)", "predict": "predictions", "login": "sign-in (ramp)"}
    lines = ["| group | requests | req/s | errors | error rate | p50 ms | p95 ms | p99 ms | max ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    groups = dict(result["groups"])
    if "login" not in groups and "login" in result["ramp"]:
        groups["login"] = result["ramp"]["login"]
    for group in GROUPS:
        g = groups.get(group)
        if g is None:
            continue
        lines.append(f"| {labels[group]} | {g['requests']:,} | {fmt(g['rps'])} | {g['errors']} | "
                     f"{g['error_rate']:.2%} | {fmt(g['p50_ms'])} | {fmt(g['p95_ms'])} | {fmt(g['p99_ms'])} | "
                     f"{fmt(g['max_ms'])} |")
    return "\n".join(lines)


def endpoint_table(result: dict, top: int = 12) -> str:
    rows = sorted(result["endpoints"].items(), key=lambda item: -item[1]["p99_ms"])[:top]
    lines = ["| endpoint | requests | p50 ms | p95 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, g in rows:
        lines.append(f"| {name} | {g['requests']:,} | {fmt(g['p50_ms'])} | {fmt(g['p95_ms'])} | "
                     f"{fmt(g['p99_ms'])} | {fmt(g['max_ms'])} |")
    return "\n".join(lines)


# --- Main --------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="measured seconds after the ramp (300)")
    parser.add_argument("--ui-users", type=int, default=50, help="people browsing the UI and API (50)")
    parser.add_argument("--predict-users", type=int, default=20, help="prediction clients (20)")
    parser.add_argument("--ui-wait", default="1,3", help="think time between a person's requests, s (1,3)")
    parser.add_argument("--predict-wait", default="0.1,0.5", help="wait between a client's calls, s (0.1,0.5)")
    parser.add_argument("--spawn-rate", type=float, default=2, help="users started per second (2)")
    parser.add_argument("--settle", type=float, default=10,
                        help="seconds between the last user's start and the measurement (10)")
    parser.add_argument("--database-url", default=os.environ.get("LOAD_DATABASE_URL",
                                                                 "postgres://postgres@127.0.0.1:5432/portal_load"),
                        help="PostgreSQL server and the database to (re)create there (portal_load)")
    parser.add_argument("--broker-url", default=os.environ.get("LOAD_BROKER_URL", "redis://127.0.0.1:6379/12"),
                        help="an empty Redis database for Celery's broker (flushed at the end)")
    parser.add_argument("--redis-url", default=os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/13"),
                        help="an empty Redis database for the cache and the prediction log (flushed at the end)")
    parser.add_argument("--web-concurrency", type=int, default=0,
                        help="gunicorn processes (0: gunicorn.conf.py's default, one per CPU)")
    parser.add_argument("--web-threads", type=int, default=0,
                        help="threads per gunicorn process (0: gunicorn.conf.py's)")
    parser.add_argument("--no-serving-pool", dest="serving_pool", action="store_false",
                        help="the prediction clients call the web gunicorn, not a serving-only one (PORTAL_SERVICE="
                             "serving) as docker-compose's `serving` service behind the proxy")
    parser.add_argument("--api-pool", action=argparse.BooleanOptionalAction, default=True,
                        help="API calls go to a gunicorn of their own, as docker-compose's `api` service behind the "
                             "proxy's /api/ route (--no-api-pool: to the one rendering pages)")
    parser.add_argument("--web-nice", type=int, default=5,
                        help="niceness of the gunicorn rendering pages, as docker-compose's WEB_NICE (5): pages "
                             "yield the CPU to API calls and predictions; 0: none")
    parser.add_argument("--api-processes", type=int, default=0,
                        help="processes of the API gunicorn (0: gunicorn.conf.py's default, one per CPU)")
    parser.add_argument("--api-threads", type=int, default=0, help="threads per API process (0: gunicorn.conf.py's)")
    parser.add_argument("--serving-processes", type=int, default=0,
                        help="processes of the serving-only gunicorn (0: gunicorn.conf.py's default, one per CPU)")
    parser.add_argument("--serving-threads", type=int, default=0,
                        help="threads per serving process (0: gunicorn.conf.py's)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery worker processes (2)")
    parser.add_argument("--worker-nice", type=int, default=5,
                        help="niceness of the Celery worker and beat, as docker-compose.yml's WORKER_NICE (5; 0: none)")
    parser.add_argument("--json", default=str(REPO_ROOT / "var" / "bench" / "load.json"), help="result file")
    parser.add_argument("--keep", action="store_true", help="keep the database, files and logs for a look")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.ui_users < 0 or args.predict_users < 0 or args.ui_users + args.predict_users == 0:
        parser.error("--duration must be positive and there must be at least one user")
    for name in ("ui_wait", "predict_wait"):
        try:
            low, high = (float(x) for x in getattr(args, name).split(","))
        except ValueError:
            parser.error(f"--{name.replace('_', '-')} is two numbers of seconds, e.g. 1,3")
        if not 0 <= low <= high:
            parser.error(f"--{name.replace('_', '-')}: need 0 <= low <= high")
    return args


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally below, which stops every process


def main(argv=None) -> int:
    args = parse_args(argv)
    # Ctrl-C stops the run even when started from a script in the background (which ignores SIGINT by default).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    import celery
    import django
    import gunicorn
    import locust

    run = LoadRun(args)
    load_start = os.getloadavg()
    started = time.time()
    try:
        run.check_redis()
        run.make_database()
        plan = run.setup()
        run.start_servers()
        raw = run.run_locust()
        load_end = os.getloadavg()
        result = analyse(raw)
        state = raw["state"]
        result["cpu"] = run.cpu.between(state["measure_start"] or 0, state["measure_end"] or 0)
        result["prediction_log"] = run.verify_log()
        result["access_log_5xx"] = run.access_log_5xx()
    finally:
        run.cleanup()

    predict_ok = result["all_phases"].get("predict", {}).get("ok", 0)
    plog = result["prediction_log"]
    plog["predictions_answered_200"] = predict_ok
    plog["lost"] = predict_ok - plog.get("rows_200", 0)
    result.update({
        "machine": machine_facts(django=django.get_version(), gunicorn=gunicorn.__version__,
                                 celery=celery.__version__, locust=locust.__version__,
                                 postgresql=run.pg_version, redis=run.redis_version),
        "load_average": {"start": load_start, "end": load_end},
        "settings": {"duration_s": args.duration, "ui_users": args.ui_users, "predict_users": args.predict_users,
                     "ui_wait_s": args.ui_wait, "predict_wait_s": args.predict_wait,
                     "spawn_rate": args.spawn_rate, "settle_s": args.settle,
                     "web_concurrency": args.web_concurrency or "cpus", "web_threads": args.web_threads or "conf",
                     "serving_pool": args.serving_pool, "api_pool": args.api_pool, "web_nice": args.web_nice,
                     "api_processes": args.api_processes or "cpus", "api_threads": args.api_threads or "conf",
                     "serving_processes": args.serving_processes or "cpus",
                     "serving_threads": args.serving_threads or "conf",
                     "worker_concurrency": args.worker_concurrency, "worker_nice": args.worker_nice,
                     "predict_model": plan["predict_model"], "predict_sizes": plan["predict_sizes"]},
        "wall_seconds": time.time() - started,
    })
    targets = {}
    for group, limit in TARGETS_P99_MS.items():
        p99 = result["groups"].get(group, {}).get("p99_ms", float("nan"))
        targets[f"{group} p99 < {limit:.0f} ms"] = {"p99_ms": p99, "met": p99 < limit}
    total_errors = sum(g["errors"] for g in result["all_phases"].values())
    targets["0 errors"] = {"errors": total_errors, "met": total_errors == 0}
    targets["prediction log complete"] = {"lost": plog["lost"], "met": plog["lost"] == 0 and plog["pending"] == 0}
    result["targets"] = targets

    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))

    m = result["machine"]
    print()
    print(f"Machine: {m['cpu']} ({m['cores']} cores), {m['os']}, Python {m['python']}, Django {m['django']}, "
          f"PostgreSQL {m['postgresql']}, Redis {m['redis']}, gunicorn {m['gunicorn']}, locust {m['locust']}.")
    print(f"Run on {m['date']}: {args.ui_users} browsers + {args.predict_users} prediction clients, "
          f"{result['measured_seconds']:.0f} s measured after the ramp; load average {load_start[0]:.1f} at the "
          f"start, {load_end[0]:.1f} at the end.")
    print()
    print(table(result))
    print()
    print("Slowest endpoints (by p99, measured phase):")
    print()
    print(endpoint_table(result))
    print()
    print(f"Prediction log: {plog['rows']:,} rows for the benchmark deployment ({plog['rows_200']:,} with status 200) "
          f"for {predict_ok:,} answers 200; {plog['pending']} still pending; lost: {plog['lost']}.")
    print(f"5xx in gunicorn's access log: {result['access_log_5xx']}.")
    if result["cpu"]:
        cpu = result["cpu"]
        parts = ", ".join(f"{part} {cores:.2f}" for part, cores in sorted(cpu["cores_by_part"].items(),
                                                                          key=lambda item: -item[1]))
        print(f"CPU in the measured phase ({cpu['seconds']:.0f} s): machine {cpu['machine_busy']:.0%} busy, "
              f"{cpu['stolen']:.0%} stolen by the hypervisor; cores used: {parts}.")
    for name, target in targets.items():
        print(f"target {name}: {'met' if target['met'] else 'MISSED'} ({target})")
    if result["errors"]:
        print("Errors (first of each kind):")
        for key, count in sorted(result["errors"].items(), key=lambda item: -item[1])[:20]:
            print(f"  {count} x {key}")
    print(f"Result: {out}")
    if total_errors or plog["lost"] or plog["pending"] or result["ready_timeout"]:
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench_load: interrupted; every process it started was stopped.", file=sys.stderr)
        sys.exit(130)
