"""Real things to break for the serving fault tests: a private redis-server, a TCP proxy in front of PostgreSQL that
can cut the connection mid-query, a gunicorn process, and models that hang or eat memory."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from mlflow.pyfunc import PythonModel

from tests.faults.brokers import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for_port(port: int, *, seconds: float = 20.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {seconds} s")


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server. cut_on(marker): the connection whose client sends bytes
    containing `marker` is closed both ways before they reach the server (the database goes away mid-transaction,
    so the server rolls it back); down(): every connection is closed and new ones are refused until up()."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.marker: bytes | None = None
        self.cuts = 0
        self.refusing = False
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut_on(self, marker: bytes | None) -> None:
        self.marker = marker

    def down(self) -> None:
        self.refusing = True
        for pair in list(self._pairs):
            self._close(pair)

    def up(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self._stop.set()
        self.down()
        self._listener.close()
        self._thread.join(timeout=5)

    def _close(self, pair) -> None:
        for end in pair:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()
        if pair in self._pairs:
            self._pairs.remove(pair)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self.refusing:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = (client, server)
            self._pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair) -> None:
        client, server = pair
        try:
            while pair in self._pairs:
                ready, _, _ = select.select([client, server], [], [], 0.2)
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        self._close(pair)
                        return
                    if end is client and self.marker is not None and self.marker in data:
                        self.cuts += 1
                        self._close(pair)
                        return
                    (server if end is client else client).sendall(data)
        except (OSError, ValueError):
            self._close(pair)


def start_gunicorn(port: int, env: dict, log: Path) -> subprocess.Popen:
    """The repository's gunicorn.conf.py serving portal.wsgi on a free loopback port, in its own process group."""
    handle = log.open("wb")
    process = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), "portal.wsgi"],
        cwd=str(REPO), env={**os.environ, **env, "WEB_BIND": f"127.0.0.1:{port}"}, stdout=handle,
        stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return process


def stop_process_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    try:
        return [int(pid) for pid in children.read_text().split()]
    except OSError:
        return []


# --- Models that misbehave: our own test code, stored directly like tests/deployments/conftest.py's ---------------


class HangingModel(PythonModel):
    """Never answers (well, after ten minutes): a model waiting on something that will not come."""

    def predict(self, context, model_input, params=None):
        time.sleep(600)
        return [1] * len(model_input)


class GreedyModel(PythonModel):
    """Takes memory 64 MB at a time until there is none left (bounded at 4 GB, so it stops even unconstrained)."""

    def predict(self, context, model_input, params=None):
        hoard = []
        for _ in range(64):
            hoard.append(np.ones(8 * 1024 * 1024))  # 64 MB, touched
        return [len(hoard)] * len(model_input)


class HangsOnAgeModel(PythonModel):
    """Answers at once, except for a row whose age is 99: then it hangs (a bug only some inputs reach)."""

    def predict(self, context, model_input, params=None):
        if (model_input["age"] == 99).any():
            time.sleep(600)
        return [0] * len(model_input)


class HugeOnAgeModel(PythonModel):
    """Answers at once, except for a row whose age is 98: then it asks for a terabyte at once (the kernel refuses)."""

    def predict(self, context, model_input, params=None):
        if (model_input["age"] == 98).any():
            np.ones(2**37)  # 1 TiB of float64
        return [0] * len(model_input)


def pyfunc_version(project, actor, python_model, directory: Path, *, name: str, registered=None):
    """The next version of `registered` (or of a new registered model called `name`): `python_model` saved as an
    MLflow python_function model in the portal's MLflow store, READY to deploy, with the churn signature."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from apps.registry import mlflow_store
    from apps.registry.models import ModelVersion, RegisteredModel
    from tests.registry.conftest import FEATURES, training_frame

    frame = training_frame()[FEATURES]
    if registered is None:
        registered = RegisteredModel.objects.create(project=project, name=name, slug=name.lower(), created_by=actor)
    number = registered.versions.count() + 1
    target = directory / f"{registered.slug}-{number}"
    mlflow_store.configure()
    mlflow.pyfunc.save_model(str(target), python_model=python_model(),
                             signature=infer_signature(frame, [1] * len(frame)))
    stored = mlflow_store.store_directory(target, registered_name=f"portal.{registered.slug}",
                                          project_slug=project.slug, tags={})
    return ModelVersion.objects.create(
        model=registered, number=number, status=ModelVersion.Status.READY, format="mlflow", created_by=actor,
        sha256=f"{number:x}" * 64, artifact_sha256=stored.artifact_sha256, mlflow_model_uri=stored.model_uri,
        signature={"inputs": [{"name": c, "type": "long" if c != "income" else "double"} for c in FEATURES],
                   "outputs": []})
