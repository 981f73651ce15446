"""gunicorn settings for the portal's `web` service (docker-compose.yml and the image's CMD use this file).

Each value comes from an environment variable with a default suited to serving predictions; how to size
them is in docs/operations.md, "Serving". A bad value stops gunicorn at start-up with the variable's name.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import threading
from pathlib import Path


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name}={raw!r} is not a whole number.") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be at least {minimum} (got {value}).")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"gunicorn.conf.py: {name}={raw!r} is not a boolean (use 1 or 0).")


def cpus() -> int:
    """CPUs this container may use: its cgroup quota if it has one (docker --cpus), else the CPUs it may run on."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# Predictions are CPU-bound: one process per CPU. WEB_CONCURRENCY=0 (or unset) means exactly that.
workers = _int("WEB_CONCURRENCY", 0) or cpus()
# Threads overlap a worker's waiting (database, Redis, MLflow, slow clients) and models that release the GIL
# (NumPy, ONNX Runtime); pure-Python prediction code gains nothing from more of them.
worker_class = "gthread"
threads = _int("WEB_THREADS", 4, minimum=1)

bind = [os.environ.get("WEB_BIND", "0.0.0.0:8000")]
# Longer than the reverse proxy's idle timeout for upstream connections (nginx: 60 s), so the proxy closes
# an idle connection first and never sends a request on one gunicorn is closing.
keepalive = _int("WEB_KEEPALIVE", 75, minimum=1)

# A prediction is cut off after PORTAL_SERVING_TIMEOUT_SECONDS (a 504 from the portal). The worker timeout is
# the heartbeat: with gthread the main loop beats while threads work, so it only fires when a whole process
# is stuck (a C extension holding the GIL); it must stay above the prediction timeout and above slow uploads.
_serving_timeout = _int("PORTAL_SERVING_TIMEOUT_SECONDS", 30, minimum=1)
timeout = _int("WEB_TIMEOUT", max(120, _serving_timeout + 30), minimum=_serving_timeout + 1)
# On a restart, in-flight predictions get their full time to finish.
graceful_timeout = _int("WEB_GRACEFUL_TIMEOUT", _serving_timeout + 5, minimum=1)

# Restart a worker after this many requests (with jitter, so they do not all restart together): bounds slow
# leaks in model libraries. Off by default: a recycled worker closes its clients' keep-alive connections, and a
# POST sent on one just as it closes gets no answer (3 of 2,480 in the serving benchmark's burst). Turn it on
# only for a library known to leak; the replacement loads its models again (warm-up below).
max_requests = _int("WEB_MAX_REQUESTS", 0)
max_requests_jitter = _int("WEB_MAX_REQUESTS_JITTER", max(0, max_requests // 10))

# Not preloaded: models are loaded per process after the fork anyway (the serving cache), so preloading would
# share only Django's code, and CPython's reference counting soon copies those pages; without it each worker
# opens its own database, Redis and MLflow clients and `kill -HUP` reloads new code.
preload_app = False

# The heartbeat file on tmpfs: on an overlay or network disk, its writes can stall and look like a hung worker.
# (gunicorn creates it with mkstemp and unlinks it at once, so a shared directory is safe.)
_SHM = "/dev/shm"  # noqa: S108
if Path(_SHM).is_dir():
    worker_tmp_dir = _SHM

accesslog = "-"
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").lower()
# %(D)s: microseconds spent; the request id ties an access-log line to the prediction log.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus rid=%({x-request-id}o)s "%(a)s"'


def post_worker_init(worker) -> None:
    """Load the URL map's views now and the active deployments' models in the background, so a new or recycled
    worker's first request does not wait for either (WEB_WARM_MODELS=0: no models), then freeze the heap."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (imports every view module)
    _freeze_heap()
    if _bool("WEB_WARM_MODELS", True):
        threading.Thread(target=_warm, name="warm-models", daemon=True).start()


def _freeze_heap() -> None:
    """Take what is loaded so far out of the garbage collector's sight (gc.freeze). A full collection walks every
    tracked object: ~115 ms with Django and the views loaded, more with models, and every thread of the process
    waits while it runs; under load that was the tail of the latencies. Code and models live as long as the
    process anyway; what requests allocate is still collected."""
    gc.collect()
    gc.freeze()


def _warm() -> None:
    from django.db import close_old_connections

    from apps.deployments import serving
    from apps.deployments.models import Deployment

    log = logging.getLogger("gunicorn.error")
    try:
        slugs = list(Deployment.objects.filter(status=Deployment.Status.ACTIVE).values_list("slug", flat=True))
        for slug in slugs:
            try:
                serving.warm(slug)
            except Exception:  # one broken model must not keep the others cold; serving reports it per request
                log.exception("could not warm deployment %s", slug)
        log.info("warmed %d deployment(s)", len(slugs))
        _freeze_heap()
    except Exception:
        log.exception("could not list deployments to warm")
    finally:
        close_old_connections()
