"""Private brokers for fault tests: a redis-server that a test may stop and start, or a filesystem queue of its
own, and a way to point this test process's Celery app at one (so a worker left running by other tests on the
shared queue never takes these jobs)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import current_app
from kombu import pools as kombu_pools

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free loopback port, its files in `workdir`.

    persistent=True keeps an append-only file as docker-compose's Redis does, so start() after stop() brings back
    what it held; without it a restart loses everything (a message the broker held is gone). stop() is a clean
    shutdown (SIGTERM: `docker compose stop redis`), kill() a crash, freeze()/thaw() a Redis that keeps its
    connections open but no longer answers (SIGSTOP/SIGCONT)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistent = persistent
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, *, timeout: float = 15) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} on port {self.port}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self.process = None

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def filesystem_transport_options(folder: Path) -> dict:
    """The same shape as settings.py gives the embedded broker, under another folder."""
    for name in ("queue", "processed", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control"),
            "store_processed": False}


@contextmanager
def use_broker(url: str, transport_options: dict | None = None) -> Iterator[None]:
    """Publish this process's tasks to another broker for a while (Celery caches its connection pools)."""
    app = current_app._get_current_object()
    # The CELERY_BROKER_URL environment variable wins over conf.broker_url; conf.broker_write_url (what
    # publishing uses) wins over both.
    saved = (app.conf.get("broker_write_url"), app.conf.broker_transport_options)

    def switch(to_url: str | None, options: dict) -> None:
        # kombu keeps pools in a registry keyed by connection: closing only the app's pool would leave a closed
        # pool there for the broker switched back to ("Acquire on closed pool" in later tests).
        kombu_pools.reset()
        app._pool = None
        app.amqp._producer_pool = None
        app.conf.broker_write_url = to_url
        app.conf.broker_transport_options = options

    switch(url, transport_options or {})
    try:
        yield
    finally:
        switch(*saved)
