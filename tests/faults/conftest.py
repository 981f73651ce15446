"""Fault-test fixtures: private brokers, real Celery workers that tests may kill, and bounded waits.

Every process started here is killed in the fixture's teardown, and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from django.conf import settings
from django.db import connection

from tests.conftest import _MLFLOW_ENVIRONMENT, ROOT, _database_url
from tests.faults.brokers import REDIS_SERVER, RedisServer, filesystem_transport_options, use_broker


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, every: float = 0.1):
    """Poll until `predicate()` is truthy and return it; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@pytest.fixture
def redis_server(tmp_path_factory):
    """A private redis-server (its own port, no persistence) that the test may stop and start again."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class Broker:
    """Where this test's jobs go: the URL and options both this process and its workers use."""

    def __init__(self, url: str, transport_options: dict, worker_env: dict[str, str]) -> None:
        self.url, self.transport_options, self.worker_env = url, transport_options, worker_env


@pytest.fixture
def broker_kind() -> str:
    """The broker the worker tests use: this run's kind (a test may parametrize it to "redis")."""
    return "redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem"


@pytest.fixture
def private_broker(broker_kind, tmp_path_factory, request):
    """A broker of `broker_kind`, private to the test (a worker other tests left running on the shared queue
    never takes these jobs), with this process publishing to it for the test's duration."""
    if broker_kind == "redis":
        server = request.getfixturevalue("redis_server")
        broker = Broker(server.url(), {}, {"CELERY_BROKER_URL": server.url()})
        broker.redis = server
    else:
        var_dir = tmp_path_factory.mktemp("worker-var")
        # settings.py puts the filesystem queue under PORTAL_VAR_DIR/celery: a worker with its own var dir
        # (the database is passed by URL) reads the queue this process writes to.
        options = filesystem_transport_options(var_dir / "celery")
        broker = Broker("filesystem://", options, {"PORTAL_VAR_DIR": str(var_dir), "CELERY_BROKER_URL": "filesystem://"})
        broker.redis = None
    with use_broker(broker.url, broker.transport_options):
        yield broker


class WorkerProcess:
    """`celery -A portal worker` with a prefork pool of one child, so the child and the main process can
    each be killed; it also loads the test-only jobs in tests/faults/tasks.py."""

    def __init__(self, *, node: str, env: dict[str, str], log_path: Path) -> None:
        self.node, self.env, self.log_path = node, env, log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self, *, timeout: float = 60) -> WorkerProcess:
        self._log = self.log_path.open("a")
        self._log.write(f"\n--- start {time.strftime('%H:%M:%S')} ---\n")
        self._log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-I", "tests.faults.tasks", "-n", self.node,
             "--loglevel=INFO", "--pool=prefork", "--concurrency=1", "--without-heartbeat", "--without-mingle",
             "--without-gossip"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        marker = self.log().count(" ready.") + 1
        wait_until(lambda: self.log().count(" ready.") >= marker or self.process.poll() is not None,
                   timeout=timeout, what=f"worker {self.node} to start:\n{self.log()[-3000:]}")
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.node} exited at start:\n{self.log()[-3000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pid(self) -> int:
        def child():
            children = psutil.Process(self.process.pid).children()
            return children[0].pid if children else None

        return wait_until(child, timeout=30, what="the worker's pool child")

    def kill_child(self) -> None:
        os.kill(self.child_pid(), signal.SIGKILL)

    def kill_main(self) -> None:
        """SIGKILL the main process only, as the OOM killer or a lost host would (its pool child follows,
        by the parent-death signal Celery sets)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the session holds the main process and its child
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def start_worker(private_broker, tmp_path_factory):
    """Start (or restart, with the same node name) real workers on the test database and private broker."""
    if connection.vendor == "sqlite" and "memory" in connection.settings_dict["NAME"]:
        pytest.fail("The SQLite test database must be a file so a worker process can share it.")
    env = {**os.environ, "DATABASE_URL": _database_url(), "PYTHONUNBUFFERED": "1", **private_broker.worker_env}
    for name, value in _MLFLOW_ENVIRONMENT.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    started: list[WorkerProcess] = []
    log_dir = tmp_path_factory.mktemp("workers")

    def _start(node: str | None = None) -> WorkerProcess:
        node = node or f"faults-{uuid.uuid4().hex[:8]}@fault-tests"
        worker = WorkerProcess(node=node, env=env, log_path=log_dir / f"{node.split('@')[0]}.log")
        started.append(worker)
        return worker.start()

    yield _start
    for worker in started:
        worker.stop()
