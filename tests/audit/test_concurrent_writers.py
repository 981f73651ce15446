"""Parallel writers append to ONE chain: no duplicate or missing sequence, no fork, no false alarm.

Real threads with their own database connections, committing for real (transaction=True). CI runs
the suite on PostgreSQL, where this is the case that matters; SQLite serialises writers with
BEGIN IMMEDIATE and is checked too.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from apps.audit import services as audit
from apps.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from apps.audit.services import verify_chain

THREADS = 8
EVENTS_EACH = 25


def _run_in_threads(target, count: int) -> list[BaseException]:
    """Start `count` threads at the same moment; return what they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            start.wait(timeout=30)
            target(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the test, not swallowed
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection; leaving it open blocks teardown

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    return errors


def _assert_one_chain(expected: int) -> None:
    events = list(AuditEvent.objects.order_by("sequence").values("sequence", "prev_hash", "hash", "details"))
    assert [e["sequence"] for e in events] == list(range(1, expected + 1)), "gaps or duplicate sequences"
    previous = GENESIS_HASH
    for event in events:
        assert event["prev_hash"] == previous, f"the chain forks at #{event['sequence']}"
        previous = event["hash"]
    head = AuditChainHead.objects.get(pk=1)
    assert (head.sequence, head.hash) == (expected, previous)
    report = verify_chain()
    assert (report.ok, report.events, report.first_bad) == (True, expected, None), report.reason


def _parallel_writers_keep_one_chain() -> None:
    audit.record("load.start")  # the head row exists before the race starts

    def write(index: int) -> None:
        for n in range(EVENTS_EACH):
            audit.record("load.write", details={"thread": index, "n": n})

    errors = _run_in_threads(write, THREADS)

    assert errors == []
    _assert_one_chain(1 + THREADS * EVENTS_EACH)
    written = {(e["thread"], e["n"]) for e in AuditEvent.objects.filter(action="load.write")
               .values_list("details", flat=True)}
    assert written == {(t, n) for t in range(THREADS) for n in range(EVENTS_EACH)}, "an event was lost"


def _verification_during_writes_never_raises_a_false_alarm() -> None:
    audit.record("load.start")
    writers = THREADS - 1
    finished: list[int] = []
    lock = threading.Lock()
    writers_done = threading.Event()
    reports = []

    def verify_or_write(index: int) -> None:
        if index == 0:  # one thread keeps verifying while the others append
            while not writers_done.is_set():
                reports.append(verify_chain())
            reports.append(verify_chain())
            return
        try:
            for n in range(EVENTS_EACH):
                audit.record("load.write", details={"thread": index, "n": n})
        finally:
            with lock:
                finished.append(index)
                if len(finished) == writers:
                    writers_done.set()

    errors = _run_in_threads(verify_or_write, THREADS)

    assert errors == []
    assert len(reports) >= 2
    bad = [r for r in reports if not r.ok]
    assert bad == [], f"verify_chain reported a broken chain while events were being appended: {bad[0]}"
    _assert_one_chain(1 + writers * EVENTS_EACH)


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="row locks under real concurrency need PostgreSQL (CI runs this suite on it)")
@pytest.mark.django_db(transaction=True)
def test_parallel_writers_keep_one_chain_on_postgres():
    _parallel_writers_keep_one_chain()


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="row locks under real concurrency need PostgreSQL (CI runs this suite on it)")
@pytest.mark.django_db(transaction=True)
def test_verifying_while_writers_append_reports_no_false_alarm_on_postgres():
    _verification_during_writes_never_raises_a_false_alarm()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant of the test above")
@pytest.mark.django_db(transaction=True)
def test_parallel_writers_keep_one_chain_on_sqlite():
    _parallel_writers_keep_one_chain()


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the SQLite variant of the test above")
@pytest.mark.django_db(transaction=True)
def test_verifying_while_writers_append_reports_no_false_alarm_on_sqlite():
    _verification_during_writes_never_raises_a_false_alarm()
