"""The prediction log's buffer: the hot path appends a compact record; a beat task bulk-inserts them.

With REDIS_URL set, records go to a Redis list (one RPUSH). If Redis does not answer, the record is
written straight to the database instead: slower for that request, never dropped. On the embedded
defaults (no Redis) they are appended to a spool file per process under VAR_DIR/predictions/.

Draining is at-least-once: a record is removed from the buffer only after its rows are committed, and
`record_id` is unique, so a record drained twice (a crash between the two steps) is inserted once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

REDIS_KEY = "portal:prediction-log"
REDIS_LOCK = "portal:prediction-log:drain-lock"
BATCH = 1000
_redis = None
_redis_lock = threading.Lock()
_spool_lock = threading.Lock()


def redis_client():
    """This process's Redis client (None on the embedded defaults); short timeouts so a dead Redis is noticed."""
    global _redis
    if not settings.REDIS_URL:
        return None
    with _redis_lock:
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _redis


def hot_redis():
    """The Redis client for the serving path, or None while Redis is known to be down.

    A Redis that hangs (rather than refusing connections) costs every call its socket timeout; after one failure the
    serving path skips Redis for PORTAL_REDIS_RETRY_SECONDS (default 5) instead of paying that on every request."""
    client = redis_client()
    if client is None or time.monotonic() < getattr(client, "portal_down_until", 0.0):
        return None
    return client


def redis_failed(exc: Exception) -> None:
    """Record that Redis did not answer, so the serving path leaves it alone for a few seconds."""
    client = redis_client()
    if client is None:
        return
    if time.monotonic() >= getattr(client, "portal_down_until", 0.0):
        logger.warning("Redis did not answer (%s); the serving path goes without it for a few seconds", exc)
    client.portal_down_until = time.monotonic() + settings.PORTAL_REDIS_RETRY_SECONDS


def spool_dir() -> Path:
    path = Path(settings.VAR_DIR) / "predictions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_record(*, request_id: str, deployment_id: int, version_id: int | None, role: str = "champion",
               source: str = "online", latency_ms: float | None, status: int, caller: str = "",
               caller_id: int | None = None, row_count: int = 0, inputs=None, outputs=None, error: str = "") -> dict:
    return {"r": uuid.uuid4().hex, "q": request_id, "d": deployment_id, "v": version_id, "role": role,
            "src": source, "t": time.time(), "ms": latency_ms, "s": status, "c": caller, "ci": caller_id,
            "n": row_count, "i": inputs, "o": outputs, "e": error}


def push(record: dict) -> str:
    """Buffer one record; returns where it went ("redis", "spool" or "database")."""
    line = json.dumps(record, separators=(",", ":"), default=str)
    if settings.REDIS_URL:
        client = hot_redis()
        if client is not None:
            try:
                client.rpush(REDIS_KEY, line)
                return "redis"
            except Exception as exc:  # any Redis failure: write through rather than lose the record
                redis_failed(exc)
        # Written through. If a timed-out RPUSH did reach Redis after all, the drain inserts it once more and the
        # unique record_id makes that a no-op: never lost, never twice.
        insert([record])
        return "database"
    _append_spool(line)
    return "spool"


def _append_spool(line: str) -> None:
    path = spool_dir() / f"spool-{os.getpid()}.jsonl"
    data = (line + "\n").encode()
    with _spool_lock:
        while True:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # The drainer renames the file before reading it: if that happened while we waited for the
                # lock, this descriptor points at the renamed file; write to a fresh one instead.
                try:
                    same = os.fstat(fd).st_ino == os.stat(path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    os.write(fd, data)
                    return
            finally:
                os.close(fd)


# --- Draining ------------------------------------------------------------------------------------------------


def _inputs_of(record: dict):
    """The request's rows as {"columns", "data"}: logged as such (batch), or parsed here from the body that was
    sent (online requests log the raw body, so the hot path never re-serialises it)."""
    if record.get("i") is not None or record.get("b") is None:
        return record.get("i")
    from apps.deployments import protocol

    body = record["b"]
    try:
        table = protocol.parse(body.encode(), record.get("ct") or "")
    except protocol.PayloadError:
        return {"raw": body[:10_000]}  # a refused request: what was sent, as text
    return {"columns": table.columns, "data": table.rows}


def _outputs_of(record: dict):
    if record.get("o") is not None or not record.get("oc"):
        return record.get("o")
    return json.loads(record["oc"]).get("predictions")


def _row(record: dict):
    from apps.deployments.models import PredictionLog

    return PredictionLog(
        record_id=uuid.UUID(record["r"]), request_id=str(record["q"])[:64], deployment_id=record["d"],
        model_version_id=record.get("v"), role=record.get("role") or "champion", source=record.get("src") or "online",
        created_at=datetime.fromtimestamp(float(record["t"]), tz=UTC), latency_ms=record.get("ms"),
        status_code=int(record["s"]), caller=str(record.get("c") or "")[:150], caller_id=record.get("ci"),
        row_count=int(record.get("n") or 0), inputs=_inputs_of(record), outputs=_outputs_of(record),
        error=str(record.get("e") or ""))


def insert(records: list[dict]) -> int:
    """Bulk-insert records (already-inserted ones are skipped); records of deleted deployments are dropped."""
    from apps.deployments.models import Deployment
    from apps.registry.models import ModelVersion

    rows = []
    for record in records:
        try:
            rows.append(_row(record))
        except (KeyError, TypeError, ValueError) as exc:
            logger.error("prediction log: dropping a malformed record (%s): %.200s", exc, record)
    if not rows:
        return 0
    live = set(Deployment.objects.filter(pk__in={r.deployment_id for r in rows}).values_list("pk", flat=True))
    versions = set(ModelVersion.objects.filter(pk__in={r.model_version_id for r in rows if r.model_version_id})
                   .values_list("pk", flat=True))
    rows = [r for r in rows if r.deployment_id in live]
    for row in rows:
        if row.model_version_id not in versions:
            row.model_version_id = None
    from apps.deployments.models import PredictionLog

    with transaction.atomic():
        PredictionLog.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
    return len(rows)


def _parse(lines) -> list[dict]:
    records = []
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            logger.error("prediction log: dropping a line that is not JSON: %.200s", line)
    return records


def drain(max_seconds: float = 4.0) -> int:
    """Move buffered records into PredictionLog; returns how many were inserted. One drainer at a time."""
    client = redis_client()
    total = 0
    deadline = time.monotonic() + max_seconds
    if client is not None:
        total += _drain_redis(client, deadline)
    total += _drain_spool(deadline)
    return total


LOCK_SECONDS = 15  # renewed every batch; short, so a drainer cut off by a Redis outage does not block the next long


def _drain_redis(client, deadline: float) -> int:
    from redis.exceptions import RedisError

    token = uuid.uuid4().hex
    try:
        if not client.set(REDIS_LOCK, token, nx=True, ex=LOCK_SECONDS):
            return 0
    except Exception as exc:
        logger.warning("prediction log: cannot drain Redis (%s)", exc)
        return 0
    total = 0
    try:
        while time.monotonic() < deadline:
            lines = client.lrange(REDIS_KEY, 0, BATCH - 1)
            if not lines:
                break
            total += insert(_parse(lines))
            # Only after the rows are committed, and only while the lock is still ours: a second drainer trimming
            # the same batch again would drop records it never inserted.
            if client.get(REDIS_LOCK) != token.encode():
                logger.warning("prediction log: the drain lock expired mid-drain; leaving the batch to the next drain")
                break
            client.ltrim(REDIS_KEY, len(lines), -1)
            client.expire(REDIS_LOCK, LOCK_SECONDS)
    except RedisError as exc:  # Redis went away mid-drain: what was not trimmed is drained (once) next time
        logger.warning("prediction log: Redis failed while draining (%s)", exc)
    finally:
        try:
            if client.get(REDIS_LOCK) == token.encode():
                client.delete(REDIS_LOCK)
        except RedisError as exc:  # still down: the lock expires by itself within LOCK_SECONDS
            logger.warning("prediction log: could not release the drain lock (%s)", exc)
    return total


def _drain_spool(deadline: float) -> int:
    directory = spool_dir()
    lock = os.open(directory / ".drain.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        total = 0
        # Files left by a drainer that died mid-way first, then the live spools (renamed away from writers).
        for path in sorted(directory.glob("spool-*.jsonl")):
            try:
                path.rename(directory / f"draining-{uuid.uuid4().hex}.jsonl")
            except FileNotFoundError:
                continue
        for path in sorted(directory.glob("draining-*.jsonl")):
            if time.monotonic() > deadline:
                break
            with path.open("rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # a writer that opened it before the rename is done
                records = _parse(handle.readlines())
            for start in range(0, len(records), BATCH):
                total += insert(records[start:start + BATCH])
            path.unlink()
        return total
    finally:
        os.close(lock)


def pending() -> int:
    """Records waiting in the buffer (for the operations page and tests)."""
    count = 0
    client = redis_client()
    if client is not None:
        try:
            count += client.llen(REDIS_KEY)
        except Exception as exc:
            logger.warning("prediction log: cannot count the Redis buffer (%s)", exc)
    for path in spool_dir().glob("*.jsonl"):
        with path.open("rb") as handle:
            count += sum(1 for line in handle if line.strip())
    return count


def prune(days: int | None = None) -> int:
    """Delete log rows older than the retention period (PORTAL_PREDICTION_LOG_DAYS; 0 keeps everything)."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.deployments.models import PredictionLog

    days = settings.PORTAL_PREDICTION_LOG_DAYS if days is None else days
    if days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:  # in slices, so a first prune of millions of rows does not hold one huge transaction
        ids = list(PredictionLog.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:10_000])
        if not ids:
            return deleted
        deleted += PredictionLog.objects.filter(pk__in=ids).delete()[0]
