"""Private brokers for fault tests: a redis-server that a test may stop and start, or a filesystem queue of its
own, and a way to point this test process's Celery app at one (so a worker left running by other tests on the
shared queue never takes these jobs)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from celery import current_app

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A throw-away redis-server on loopback, without persistence: stopping it loses what it held."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, *, timeout: float = 15) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
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
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


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
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None
        app.conf.broker_write_url = to_url
        app.conf.broker_transport_options = options

    switch(url, transport_options or {})
    try:
        yield
    finally:
        switch(*saved)
