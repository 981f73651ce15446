"""Webhooks: a real local HTTP receiver that fails at first; retries with backoff, a correct signature, giving up."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.monitoring import alerts, webhooks
from apps.monitoring.models import Alert, AlertRule, WebhookDelivery

SECRET = "s3cret-key"


class Receiver:
    """A webhook endpoint on 127.0.0.1 answering 500 to the first `fail` requests, then 200."""

    def __init__(self, fail: int = 0):
        self.fail, self.requests = fail, []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                code = 500 if len(receiver.requests) <= receiver.fail else 200
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def _make(fail: int = 0) -> Receiver:
        made.append(Receiver(fail))
        return made[-1]

    yield _make
    for r in made:
        r.close()


def _delivery(deployment, url: str, *, secret: str = SECRET) -> WebhookDelivery:
    rule = AlertRule.objects.create(deployment=deployment, name="Errors (test)", metric="error_rate", threshold=0.05,
                                    webhook_url=url, webhook_secret=secret)
    alert = Alert.objects.create(rule=rule, severity=rule.severity, title="Churn live: errors", value=0.2,
                                 what_happened="Error rate was 20 %.")
    return WebhookDelivery.objects.create(alert=alert, event="opened", url=url,
                                          payload=alerts.webhook_payload(alert, "opened"))


def test_retries_with_backoff_then_delivers_with_a_correct_signature(deployment, receiver):
    hook = receiver(fail=2)
    delivery = _delivery(deployment, hook.url)
    now = timezone.now()

    assert webhooks.deliver_due(now=now) == 0
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.next_attempt_at == now + timedelta(minutes=1)
    assert webhooks.deliver_due(now=now + timedelta(seconds=30)) == 0  # not due yet: no request
    assert len(hook.requests) == 1

    assert webhooks.deliver_due(now=now + timedelta(minutes=1)) == 0
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.next_attempt_at == now + timedelta(minutes=3)  # then 2 minutes

    assert webhooks.deliver_due(now=now + timedelta(minutes=3)) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert delivery.delivered_at is not None and delivery.last_error == ""
    assert webhooks.deliver_due(now=now + timedelta(hours=1)) == 0  # delivered once, never again
    assert len(hook.requests) == 3

    last = hook.requests[-1]
    body, headers = last["body"], last["headers"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Portal-Signature"] == expected
    assert headers["X-Portal-Event"] == "alert.opened"
    assert headers["X-Portal-Delivery"] == str(delivery.uuid)
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["alert"]["id"] == str(delivery.alert.uuid)
    assert payload["deployment"]["slug"] == deployment.slug
    assert payload["alert"]["url"].endswith(f"/alerts/{delivery.alert.uuid}/")


def test_gives_up_after_six_attempts(deployment, receiver):
    hook = receiver(fail=100)
    delivery = _delivery(deployment, hook.url)
    now = timezone.now()
    waits = []
    for _ in range(10):
        webhooks.deliver_due(now=now)
        delivery.refresh_from_db()
        if delivery.status != "pending":
            break
        waits.append(delivery.next_attempt_at - now)
        now = delivery.next_attempt_at
    assert delivery.status == "failed" and delivery.attempts == webhooks.MAX_ATTEMPTS == 6
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8, 16)]
    assert len(hook.requests) == 6
    assert "HTTP 500" in delivery.last_error


def test_no_signature_without_a_secret(deployment, receiver):
    hook = receiver()
    _delivery(deployment, hook.url, secret="")
    assert webhooks.deliver_due() == 1
    assert "X-Portal-Signature" not in hook.requests[0]["headers"]


def test_refuses_addresses_that_are_not_http_and_never_raises(deployment):
    delivery = _delivery(deployment, "file:///etc/passwd")
    assert webhooks.deliver_due() == 0
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "http" in delivery.last_error


def test_an_unreachable_receiver_is_a_failed_attempt(deployment, receiver):
    hook = receiver()
    hook.close()  # nothing listens on that port any more
    delivery = _delivery(deployment, hook.url)
    assert webhooks.deliver_due() == 0
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_error
