"""Benchmark the invocations endpoint (issue 6): the portal against `mlflow models serve` and the raw model.

Run from the repository root:

    .venv/bin/python bench/bench_serving.py [--duration 10] [--repeat 3] [--burst-seconds 60] [--quick] [--json]

One scikit-learn model, a 100-tree random forest fitted on scikit-learn's breast-cancer dataset (569 rows, 30
numeric columns), is served four ways on the same machine in the same run, each server with one process:

- raw: `model.predict` on a DataFrame in this process (and the ONNX session's `run` for the ONNX variant);
- mlflow: `mlflow models serve --env-manager local --workers 1` on the forest saved by `mlflow.sklearn.save_model`
  (skops, MLflow's default) with a signature, so MLflow checks the input too;
- portal: `gunicorn portal.wsgi` with one worker, `POST /api/v1/deployments/<slug>/invocations` with token auth,
  the signature check, the rate limit (set high enough not to bind) and the prediction log all on;
- portal-onnx: the same forest converted with skl2onnx (zipmap off), imported as ONNX and deployed beside it.

Everything is throwaway: a temporary PORTAL_VAR_DIR (SQLite database, MLflow store, prediction spool), or with
--database-url a `bench_serving_<pid>` database created on that PostgreSQL server and dropped at the end. The
data is made through the real services in a setup subprocess (migrate; a staff user creates the project, an
ungated environment, imports the two files as a scientist would, deploys them, and creates API tokens).

The load comes from separate client processes (so the client's GIL is not what is measured), each with one
keep-alive `http.client.HTTPConnection` with TCP_NODELAY and the body sent in one write. Single-row requests
cycle through the dataset's real rows; the --rows request is those rows repeated. Every answer must be a 200
whose predictions equal the raw model's (the script exits non-zero otherwise, or if a server does not start;
missed targets are printed, not fatal).

The burst: --burst-seconds at the highest concurrency against the portal, with a drainer doing what Celery
beat does (`predlog.drain()` every PORTAL_PREDICTION_DRAIN_SECONDS); then the log is drained to the end and the
PredictionLog rows of the burst's own token are counted. Lost = 200 answers - rows; the target is 0.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from machine import machine_facts  # bench/machine.py, beside this script

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_P50_RATIO = 0.5  # portal p50 <= half of MLflow's
TARGET_RPS_RATIO = 2.0  # portal rps at the highest concurrency >= 2x MLflow's
TARGET_OVERHEAD_MS = 2.0  # portal p50 - raw predict p50


def fail(message: str) -> None:
    raise SystemExit(f"bench_serving: {message}")


# --- The model -----------------------------------------------------------------------------------------------


def build_models(work: Path, trees: int) -> dict:
    """Fit the forest; write it as skops, as ONNX and as an MLflow model directory; the payloads and answers."""
    import mlflow.sklearn
    import numpy as np
    import onnxruntime
    import skops.io as sio
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer(as_frame=True)
    features = data.frame.drop(columns="target")
    model = RandomForestClassifier(n_estimators=trees, random_state=0).fit(features, data.target)
    blob = sio.dumps(model)
    (work / "forest.skops").write_bytes(blob)
    onnx = to_onnx(model, features.to_numpy(np.float32)[:1], options={id(model): {"zipmap": False}})
    (work / "forest.onnx").write_bytes(onnx.SerializeToString())
    mlflow.sklearn.save_model(model, str(work / "mlflow-forest"), serialization_format="skops",
                              skops_trusted_types=sio.get_untrusted_types(data=blob) or None,
                              signature=infer_signature(features.head(100), model.predict(features.head(100))))
    session = onnxruntime.InferenceSession(onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    return {"model": model, "session": session, "features": features}


def payload(features, rows: list[int]) -> bytes:
    frame = features.iloc[rows]
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
    return json.dumps(body, separators=(",", ":")).encode()


def workloads(models: dict, batch_rows: int) -> dict:
    """Per model kind: single-row bodies with their expected predictions, and one batch body with its answers."""
    import numpy as np

    features = models["features"]
    n = len(features)
    batch_index = [i % n for i in range(batch_rows)]
    sklearn_out = models["model"].predict(features).tolist()
    name = models["session"].get_inputs()[0].name
    onnx_out = models["session"].run(None, {name: features.to_numpy(np.float32)})[0].tolist()
    singles = [payload(features, [i]) for i in range(n)]
    batch = payload(features, batch_index)
    return {
        "sklearn": {"singles": singles, "single_expected": [[p] for p in sklearn_out], "batch": batch,
                    "batch_expected": [sklearn_out[i] for i in batch_index]},
        "onnx": {"singles": singles, "single_expected": [[p] for p in onnx_out], "batch": batch,
                 "batch_expected": [onnx_out[i] for i in batch_index]},
        "agreement": sum(a == b for a, b in zip(sklearn_out, onnx_out, strict=True)) / n,
    }


# --- Throwaway state -----------------------------------------------------------------------------------------


class Throwaway:
    """A temporary PORTAL_VAR_DIR, and for PostgreSQL a database made for this run; removed at the end."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="portal-bench-serving-")).resolve()
        self.var = self.dir / "var"
        self.redis_url = redis_url
        self.pg_params: dict | None = None
        self.pg_name = f"bench_serving_{os.getpid()}"
        self.database_url = ""
        self.secret_key = secrets.token_urlsafe(50)
        if database_url and not database_url.startswith("sqlite:"):
            if urlsplit(database_url).scheme not in {"postgres", "postgresql", "pgsql"}:
                fail(f"only SQLite and PostgreSQL are supported, not {urlsplit(database_url).scheme}")
            import dj_database_url
            import psycopg
            from psycopg import sql

            parsed = dj_database_url.parse(database_url)
            params = {"host": parsed.get("HOST") or None, "port": parsed.get("PORT") or None,
                      "user": parsed.get("USER") or None, "password": parsed.get("PASSWORD") or None}
            with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(self.pg_name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pg_name)))
            self.pg_params = params
            self.database_url = urlunsplit(urlsplit(database_url)._replace(path=f"/{self.pg_name}"))
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url)
            if client.llen("portal:prediction-log"):
                fail(f"the prediction-log list in {redis_url} is not empty: another portal uses that Redis "
                     "database. Give --redis-url a database number of its own (e.g. redis://127.0.0.1:6379/14).")

    def env(self) -> dict:
        """The portal processes' environment: production-like (DEBUG off, a throwaway SECRET_KEY)."""
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}}
        env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_")}  # the portal's own store, under var
        env.update({"DJANGO_SETTINGS_MODULE": "portal.settings", "PORTAL_VAR_DIR": str(self.var), "DEBUG": "0",
                    "SECRET_KEY": self.secret_key, "PYTHONPATH": str(REPO_ROOT),
                    "SECURE_SSL_REDIRECT": "0",  # plain HTTP on loopback (production: TLS at the proxy)
                    "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        return env

    def cleanup(self) -> None:
        if self.pg_params is not None:
            import psycopg
            from psycopg import sql

            with psycopg.connect(dbname="postgres", autocommit=True, **self.pg_params) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.pg_name)))
        shutil.rmtree(self.dir, ignore_errors=True)


_SETUP = r"""
import json, sys
import django
django.setup()
from django.core.files.uploadedfile import SimpleUploadedFile
from apps.accounts import services as accounts
from apps.accounts.models import User
from apps.approvals import services as approvals
from apps.deployments import services as deployments
from apps.registry import services as registry

spec = json.loads(sys.argv[1])
staff = User.objects.create_user("bench-staff", is_staff=True)
project = accounts.create_project(actor=staff, slug="bench", name="Serving benchmark")
admin = User.objects.create_user("bench-admin")
accounts.add_member(project, actor=staff, user=admin, role="admin")
environment = approvals.create_environment(project, actor=admin, name="bench", required_approvals=0)
out = {}
for kind, path, fmt in (("forest", spec["skops"], "skops"), ("onnx", spec["onnx"], "onnx")):
    with open(path, "rb") as handle:
        version = registry.start_import(
            project, actor=admin, name=f"Cancer {kind}", fmt=fmt, lineage={"input_example": spec["example"]},
            uploaded=SimpleUploadedFile(path.rsplit("/", 1)[-1], handle.read()),
            model_fields={"task_type": "classification"})
    registry.import_version(str(version.import_job_id))  # what the Celery task runs (a no-op if it already ran)
    version.refresh_from_db()
    if version.status != "ready" or not (version.signature or {}).get("inputs"):
        sys.exit(f"the {kind} import failed or has no signature: {version.status} {version.error}")
    deployment = deployments.deploy(project, actor=admin, name=f"Cancer {kind}", environment=environment,
                                    version=version)
    deployments.update(deployment, actor=admin, rate_limit_per_minute=spec["rate_limit"])
    out[kind] = {"slug": deployment.slug, "id": deployment.pk,
                 "inputs": sorted({c["type"] for c in version.signature["inputs"]})}
for name in ("bench", "burst"):
    token, key = accounts.create_token(actor=admin, name=name, project=project)
    out[name + "_token"] = key
    out[name + "_caller"] = f"{admin.username} ({token.name})"
print(json.dumps(out))
"""

_DRAIN = r"""
import json, os, sys, time
import django
django.setup()
from django.conf import settings
from apps.deployments import predlog
from apps.deployments.models import PredictionLog
stop, deployment, caller = sys.argv[1], int(sys.argv[2]), sys.argv[3]
drained = 0
while not os.path.exists(stop):  # what beat does while the burst runs
    drained += predlog.drain()
    for _ in range(settings.PORTAL_PREDICTION_DRAIN_SECONDS * 10):
        if os.path.exists(stop):
            break
        time.sleep(0.1)
while True:  # then to the end
    n = predlog.drain(max_seconds=60)
    drained += n
    if n == 0 and predlog.pending() == 0:
        break
rows = PredictionLog.objects.filter(deployment_id=deployment, caller=caller)
print(json.dumps({"drained": drained, "rows": rows.count(), "rows_200": rows.filter(status_code=200).count(),
                  "distinct_requests": rows.values("request_id").distinct().count()}))
"""


_PROFILE = r"""
import cProfile, io, json, pstats, statistics, sys, time
import django
django.setup()
from django.conf import settings
from django.test import Client, RequestFactory
from apps.deployments import protocol, serving
spec = json.loads(open(sys.argv[1]).read())
factory, client = RequestFactory(), Client(HTTP_HOST="127.0.0.1")
report = {}
for kind, body, n in [(k, b, c) for k in ("forest", "onnx") for b, c in ((spec["body"], spec["n"]),
                                                                          (spec["batch"], max(10, spec["n"] // 20)))]:
    slug, body = spec[kind], body.encode()
    path = f"/api/v1/deployments/{slug}/invocations"
    auth = {"HTTP_AUTHORIZATION": "Token " + spec["token"]}
    make = lambda: factory.post(path, data=body, content_type="application/json", **auth)
    for _ in range(min(n, 200)):
        assert serving.invoke(make(), slug).status == 200
    steps = {k: [] for k in ("authenticate", "route_for", "rate_limited", "read+parse", "signature check",
                             "run_model (pool)", "model.predict (direct)", "predictions_list+dumps", "log (push)")}
    for _ in range(n):
        request = make()
        marks = [time.perf_counter()]
        caller = serving.authenticate(request); marks.append(time.perf_counter())
        route = serving.route_for(slug); marks.append(time.perf_counter())
        serving.rate_limited(caller, route); marks.append(time.perf_counter())
        body = serving._read_body(request, settings.PORTAL_SERVING_MAX_BODY_BYTES)
        table = protocol.parse(body, request.META["CONTENT_TYPE"]); marks.append(time.perf_counter())
        frame = route.champion.schema.frame(table, max_rows=route.max_rows)  # as invoke() does
        marks.append(time.perf_counter())
        output = serving.run_model(route.champion, frame); marks.append(time.perf_counter())
        route.champion.predict(frame); marks.append(time.perf_counter())
        content = protocol.dumps({"predictions": protocol.predictions_list(output)}); marks.append(time.perf_counter())
        serving._log(route, route.champion, "champion", "profile", marks[0], caller, 200,
                     sent=(body, request.META["CONTENT_TYPE"]), table=table, answer=content)
        marks.append(time.perf_counter())
        for name, a, b in zip(steps, marks, marks[1:]):
            steps[name].append((b - a) * 1000)
    timings = {name: round(statistics.median(v), 4) for name, v in steps.items()}
    whole = []
    for _ in range(n):
        request = make()
        t0 = time.perf_counter()
        serving.invoke(request, slug)
        whole.append((time.perf_counter() - t0) * 1000)
    stack = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.post(path, data=body, content_type="application/json", **auth)
        stack.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.content
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        client.post(path, data=body, content_type="application/json", **auth)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(45)
    report[f"{kind}, {len(table.rows):,} row(s)"] = {
        "steps_p50_ms": timings, "invoke_p50_ms": round(statistics.median(whole), 4),
        "django_stack_p50_ms": round(statistics.median(stack), 4), "profile": text.getvalue()}
print(json.dumps(report))
"""


def profile(setup: dict, features, env: dict, n: int, rows: int, work: Path) -> None:
    """Where the portal's time goes, in-process: each step of `serving.invoke`, the whole call, and Django's stack."""
    spec = {"forest": setup["forest"]["slug"], "onnx": setup["onnx"]["slug"], "token": setup["bench_token"],
            "body": payload(features, [0]).decode(), "n": n,
            "batch": payload(features, [i % len(features) for i in range(rows)]).decode()}
    (work / "profile.json").write_text(json.dumps(spec))  # the batch body is too long for an argument
    report = django_child(_PROFILE, [str(work / "profile.json")], env)
    for kind, part in report.items():
        print(f"== {kind}: invoke p50 {part['invoke_p50_ms']} ms; through Django's middleware (test Client) p50 "
              f"{part['django_stack_p50_ms']} ms")
        for name, value in part["steps_p50_ms"].items():
            print(f"   {name:<26} {value:8.4f} ms")
        print(part["profile"])


def django_child(code: str, args: list[str], env: dict, timeout: float = 900) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=timeout)
    if done.returncode:
        fail(f"a setup step failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def set_up_portal(state: Throwaway, work: Path, features) -> dict:
    env = state.env()
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode:
        fail(f"migrate failed:\n{done.stderr[-4000:]}")
    spec = {"skops": str(work / "forest.skops"), "onnx": str(work / "forest.onnx"), "rate_limit": 100_000_000,
            "example": features.head(5).to_dict("records")}
    return django_child(_SETUP, [json.dumps(spec)], env)


# --- Servers -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, name: str, command: list[str], env: dict, port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log.open("wb"),
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, path: str, body: bytes | None, headers: dict, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                fail(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST" if body else "GET", path, body=body, headers=headers)
                response = conn.getresponse()
                last = f"{response.status} {response.read()[:500]!r}"
                conn.close()
                if response.status == 200:
                    return
            except OSError as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
        fail(f"{self.name} did not answer 200 within {timeout:.0f} s (last: {last}):\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: the master and its workers
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


# --- Load ----------------------------------------------------------------------------------------------------


class NoDelayConnection(http.client.HTTPConnection):
    """Keep-alive connection with Nagle off (also on the reconnects after a server closes the connection)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _client(port: int, path: str, headers: dict, bodies: list[bytes], expected: list, start: int, seconds: float,
            barrier, results) -> None:
    """One client process: requests back to back until the deadline; latencies, errors and mismatches."""
    conn = NoDelayConnection("127.0.0.1", port, timeout=120)
    latencies: list[float] = []
    errors = mismatches = 0
    first_error = ""
    i = start
    barrier.wait()
    began = time.perf_counter()
    deadline = began + seconds
    now = began
    while now < deadline:
        k = i % len(bodies)
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body=bodies[k], headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            status, data = 0, f"{type(exc).__name__}: {exc}".encode()
        now = time.perf_counter()
        latencies.append(now - t0)
        if status != 200:
            errors += 1
            first_error = first_error or f"{status} {data[:300]!r}"
            continue
        if json.loads(data)["predictions"] != expected[k]:
            mismatches += 1
    conn.close()
    results.put({"latencies": latencies, "errors": errors, "mismatches": mismatches, "first_error": first_error,
                 "elapsed": now - began})


def load(port: int, path: str, headers: dict, bodies: list[bytes], expected: list, *, concurrency: int,
         seconds: float) -> dict:
    """`concurrency` client processes for `seconds`; latency percentiles (ms), requests per second, failures."""
    import numpy as np

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(concurrency + 1)
    results = context.Queue()
    step = max(1, len(bodies) // concurrency)
    clients = [context.Process(target=_client, args=(port, path, headers, bodies, expected, n * step, seconds,
                                                     barrier, results)) for n in range(concurrency)]
    for client in clients:
        client.start()
    barrier.wait(timeout=120)
    parts = [results.get(timeout=seconds + 300) for _ in clients]
    for client in clients:
        client.join()
    latencies = np.concatenate([np.asarray(p["latencies"]) for p in parts]) * 1000
    elapsed = max(p["elapsed"] for p in parts)
    return {"requests": int(latencies.size), "rps": latencies.size / elapsed,
            "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "p99": float(np.percentile(latencies, 99)), "errors": sum(p["errors"] for p in parts),
            "mismatches": sum(p["mismatches"] for p in parts),
            "first_error": next((p["first_error"] for p in parts if p["first_error"]), "")}


def raw(predict, inputs: list, seconds: float) -> dict:
    """The model called in this process, back to back (inputs cycled), as latency percentiles and calls/s."""
    import numpy as np

    latencies = []
    began = time.perf_counter()
    i = 0
    while time.perf_counter() - began < seconds:
        t0 = time.perf_counter()
        predict(inputs[i % len(inputs)])
        latencies.append(time.perf_counter() - t0)
        i += 1
    values = np.asarray(latencies) * 1000
    return {"requests": int(values.size), "rps": values.size / (time.perf_counter() - began),
            "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
            "p99": float(np.percentile(values, 99)), "errors": 0, "mismatches": 0, "first_error": ""}


# --- The run ---------------------------------------------------------------------------------------------------


def merge(runs: list[dict]) -> dict:
    """Repeats of one measurement: the median of each figure, the rps of every repeat, failures summed."""
    import statistics

    merged = {key: statistics.median(r[key] for r in runs) for key in ("rps", "p50", "p95", "p99")}
    merged["rps_runs"] = [round(r["rps"], 1) for r in runs]
    merged["requests"] = sum(r["requests"] for r in runs)
    merged["errors"] = sum(r["errors"] for r in runs)
    merged["mismatches"] = sum(r["mismatches"] for r in runs)
    merged["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), "")
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds over every target, in rotating order")
    parser.add_argument("--rows", type=int, default=1000, help="rows of the batch request (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="client processes for the concurrent run")
    parser.add_argument("--burst-seconds", type=float, default=60)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--worker-class", choices=("gthread", "sync"), default="gthread")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per worker (default 4)")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="gunicorn worker recycling (default: gunicorn.conf.py's; 0 turns it off)")
    parser.add_argument("--database-url", default="", help="PostgreSQL server to make a throwaway database on")
    parser.add_argument("--redis-url", default="", help="Redis for the log buffer and rate limits (own db number)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s measurements, 1 round, 5 s burst")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of the load: time each step of N in-process requests and cProfile them")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.repeat, args.burst_seconds = 2, 1, min(args.burst_seconds, 5)

    import mlflow
    import onnxruntime
    import pandas as pd
    import sklearn

    load_before = os.getloadavg()
    state = Throwaway(args.database_url, args.redis_url)
    servers: list[Server] = []
    try:
        work = state.dir
        models = build_models(work, args.trees)
        loads = workloads(models, args.rows)
        setup = set_up_portal(state, work, models["features"])
        env = state.env()
        if args.profile:
            profile(setup, models["features"], env, args.profile, args.rows, work)
            return
        portal_port, mlflow_port = free_port(), free_port()
        # The repository's gunicorn.conf.py (what production runs), with one worker on a loopback port.
        gunicorn = [str(BIN / "gunicorn"), "portal.wsgi", "--config", str(REPO_ROOT / "gunicorn.conf.py"),
                    "--workers", "1", "--bind", f"127.0.0.1:{portal_port}", "--worker-class", args.worker_class]
        if args.worker_class == "gthread":
            gunicorn += ["--threads", str(args.threads)]
        if args.max_requests is not None:
            gunicorn += ["--max-requests", str(args.max_requests)]
        servers.append(Server("portal", gunicorn, env, portal_port, work / "portal.log"))
        mlflow_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        servers.append(Server("mlflow", [str(BIN / "mlflow"), "models", "serve", "-m", str(work / "mlflow-forest"),
                                         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(mlflow_port),
                                         "--workers", "1"], mlflow_env, mlflow_port, work / "mlflow.log"))
        json_headers = {"Content-Type": "application/json"}
        targets = {
            "mlflow": (mlflow_port, "/invocations", json_headers, loads["sklearn"]),
            "portal": (portal_port, f"/api/v1/deployments/{setup['forest']['slug']}/invocations",
                       {**json_headers, "Authorization": f"Token {setup['bench_token']}"}, loads["sklearn"]),
            "portal-onnx": (portal_port, f"/api/v1/deployments/{setup['onnx']['slug']}/invocations",
                            {**json_headers, "Authorization": f"Token {setup['bench_token']}"}, loads["onnx"]),
        }
        for name, (_port, path, headers, work_load) in targets.items():
            server = servers[0] if name.startswith("portal") else servers[1]
            server.wait_ready(path, work_load["singles"][0], headers)
        # Warm up: every single-row body once and a few batches, on every target.
        for port, path, headers, work_load in targets.values():
            for bodies, expected in ((work_load["singles"], work_load["single_expected"]),
                                     ([work_load["batch"]], [work_load["batch_expected"]])):
                check = load(port, path, headers, bodies, expected, concurrency=1, seconds=min(args.duration, 3))
                if check["errors"] or check["mismatches"]:
                    fail(f"warm-up on {path}: {check['errors']} errors, {check['mismatches']} wrong predictions; "
                         f"first: {check['first_error']}")

        features = models["features"]
        session = models["session"]
        onnx_input = session.get_inputs()[0].name
        single_frames = [features.iloc[[i]] for i in range(len(features))]
        batch_frame = features.iloc[[i % len(features) for i in range(args.rows)]]
        raw_targets = {
            "raw": (models["model"].predict, single_frames, [batch_frame]),
            "raw-onnx": (lambda x: session.run(None, {onnx_input: x})[0],
                         [f.to_numpy("float32") for f in single_frames], [batch_frame.to_numpy("float32")]),
        }
        runs: dict[str, dict[str, list[dict]]] = {}
        order = ["raw", "raw-onnx", *targets]
        for round_ in range(args.repeat):
            for name in order[round_ % len(order):] + order[:round_ % len(order)]:
                measured = runs.setdefault(name, {"single_c1": [], "batch_c1": [], "single_cN": []})
                if name in raw_targets:
                    predict, singles, batch = raw_targets[name]
                    measured["single_c1"].append(raw(predict, singles, args.duration))
                    measured["batch_c1"].append(raw(predict, batch, args.duration))
                    continue
                port, path, headers, work_load = targets[name]
                singles, expected = work_load["singles"], work_load["single_expected"]
                measured["single_c1"].append(load(port, path, headers, singles, expected, concurrency=1,
                                                  seconds=args.duration))
                measured["batch_c1"].append(load(port, path, headers, [work_load["batch"]],
                                                 [work_load["batch_expected"]], concurrency=1, seconds=args.duration))
                measured["single_cN"].append(load(port, path, headers, singles, expected,
                                                  concurrency=args.concurrency, seconds=args.duration))
                if not args.json:
                    last = measured["single_c1"][-1]
                    print(f"  round {round_ + 1} {name}: p50 {last['p50']:.2f} ms, c={args.concurrency} "
                          f"{measured['single_cN'][-1]['rps']:.0f} req/s", file=sys.stderr)
        results = {name: {kind: merge(r) for kind, r in kinds.items() if r} for name, kinds in runs.items()}

        # The burst: the highest concurrency against the portal for --burst-seconds, beat draining alongside.
        stop = work / "stop-draining"
        drainer = subprocess.Popen([sys.executable, "-c", _DRAIN, str(stop), str(setup["forest"]["id"]),
                                    setup["burst_caller"]], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        port, path, _, work_load = targets["portal"]
        burst = load(port, path, {**json_headers, "Authorization": f"Token {setup['burst_token']}"},
                     work_load["singles"], work_load["single_expected"], concurrency=args.concurrency,
                     seconds=args.burst_seconds)
        stop.touch()
        out, err = drainer.communicate(timeout=900)
        if drainer.returncode:
            fail(f"the drainer failed:\n{err[-4000:]}")
        counted = json.loads(out.strip().splitlines()[-1])
        answered = burst["requests"] - burst["errors"]
        burst.update(answered_200=answered, logged=counted["rows"], logged_200=counted["rows_200"],
                     distinct_logged=counted["distinct_requests"], lost=answered - counted["rows_200"])

        failures = [f"{name} {kind}: {r['errors']} errors, {r['mismatches']} wrong predictions ({r['first_error']})"
                    for name, kinds in results.items() for kind, r in kinds.items() if r["errors"] or r["mismatches"]]
        if burst["errors"] or burst["mismatches"]:
            failures.append(f"burst: {burst['errors']} errors, {burst['mismatches']} wrong ({burst['first_error']})")

        mf, po, px = results["mlflow"], results["portal"], results["portal-onnx"]
        targets_met = {
            "p50 <= 0.5 x mlflow": (po["single_c1"]["p50"] / mf["single_c1"]["p50"], TARGET_P50_RATIO, "<="),
            f"rps c={args.concurrency} >= 2 x mlflow": (po["single_cN"]["rps"] / mf["single_cN"]["rps"],
                                                        TARGET_RPS_RATIO, ">="),
            "overhead over raw p50 < 2 ms": (po["single_c1"]["p50"] - results["raw"]["single_c1"]["p50"],
                                             TARGET_OVERHEAD_MS, "<"),
            "overhead over raw p50 < 2 ms (onnx)": (px["single_c1"]["p50"] - results["raw-onnx"]["single_c1"]["p50"],
                                                    TARGET_OVERHEAD_MS, "<"),
            "logs lost in the burst == 0": (burst["lost"], 0, "=="),
        }
        verdicts = {name: {"value": round(value, 3), "target": target,
                           "met": {"<=": value <= target, ">=": value >= target, "<": value < target,
                                   "==": value == target}[op]}
                    for name, (value, target, op) in targets_met.items()}
        recycled = servers[0].tail(10**9).count("Booting worker") - 1
        report = {
            "machine": machine_facts(mlflow=mlflow.__version__, sklearn=sklearn.__version__,
                                     onnxruntime=onnxruntime.__version__, pandas=pd.__version__,
                                     database="postgresql" if state.database_url else "sqlite",
                                     log_buffer="redis" if args.redis_url else "spool files",
                                     load_average=f"{load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} "
                                                  f"at the end (1 min)"),
            "settings": {"duration_s": args.duration, "repeat": args.repeat, "rows": args.rows,
                         "concurrency": args.concurrency, "burst_s": args.burst_seconds, "trees": args.trees,
                         "gunicorn": f"{args.worker_class}" + (f", {args.threads} thread(s)"
                                                               if args.worker_class == "gthread" else ""),
                         "onnx_agrees_with_sklearn": loads["agreement"], "portal_worker_restarts": recycled},
            "results": results, "burst": burst, "targets": verdicts, "failures": failures,
        }
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_report(report)
        if failures:
            fail("; ".join(failures))
    finally:
        for server in servers:
            server.stop()
        state.cleanup()


def print_report(report: dict) -> None:
    settings = report["settings"]
    print(json.dumps(report["machine"]))
    print(f"settings: {json.dumps(settings)}")
    n = settings["concurrency"]
    print(f"| | single row p50 ms | p95 ms | p99 ms | {settings['rows']:,} rows p50 ms | p95 ms | req/s c=1 | "
          f"req/s c={n} | c={n} p50 ms | c={n} p99 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, kinds in report["results"].items():
        one, batch, many = kinds["single_c1"], kinds["batch_c1"], kinds.get("single_cN")
        cells = [f"{one['p50']:.2f}", f"{one['p95']:.2f}", f"{one['p99']:.2f}", f"{batch['p50']:.1f}",
                 f"{batch['p95']:.1f}", f"{one['rps']:,.0f}"]
        cells += ([f"{many['rps']:,.0f} {many['rps_runs']}", f"{many['p50']:.1f}", f"{many['p99']:.1f}"] if many
                  else ["", "", ""])
        print(f"| {name} | " + " | ".join(cells) + " |")
    burst = report["burst"]
    print(f"burst {settings['burst_s']:.0f} s at c={n}: {burst['answered_200']:,} answers 200 "
          f"({burst['rps']:,.0f} req/s, p50 {burst['p50']:.1f} ms, p99 {burst['p99']:.1f} ms), "
          f"{burst['logged_200']:,} logged, {burst['lost']} lost")
    for name, verdict in report["targets"].items():
        print(f"target {name}: {verdict['value']} (target {verdict['target']}): "
              f"{'met' if verdict['met'] else 'NOT MET'}")


if __name__ == "__main__":
    main()
