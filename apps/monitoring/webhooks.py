"""Webhook deliveries of alert events: signed JSON POSTs, retried with exponential backoff (run by beat).

Standard library only (urllib): one small POST does not earn a dependency. Signature: `X-Portal-Signature:
sha256=<hex HMAC-SHA256 of the exact body bytes, keyed with the rule's webhook secret>` when the rule has one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from django.db.models import Q
from django.utils import timezone

from apps.monitoring.models import WebhookDelivery

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 6
BACKOFF_MINUTES = (1, 2, 4, 8, 16)  # wait after the 1st, 2nd, … failed attempt
BATCH = 100
USER_AGENT = "Portal-Webhooks/1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect could lead the signed payload somewhere the rule's author never chose: treat it as a failure.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def _post(url: str, body: bytes, headers: dict) -> int:
    """POST and return the status code; raise OSError (URLError, timeouts) when no answer came."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)  # noqa: S310 (deliver() checked http/https)
    try:
        with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            response.read(1024)
            return response.status
    except urllib.error.HTTPError as exc:  # an answer, just not a 2xx one
        with exc:
            return exc.code


def deliver(delivery: WebhookDelivery, *, now: datetime | None = None) -> bool:
    """One attempt: True when the receiver answered 2xx. Records the outcome and schedules the retry."""
    now = now or timezone.now()
    parts = urlsplit(delivery.url)
    delivery.attempts += 1
    code, error = None, ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        error = "Refused: webhooks go only to http:// or https:// addresses."
        delivery.attempts = MAX_ATTEMPTS  # no retry can fix the address
    else:
        body = encode(delivery.payload)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Portal-Event": str(delivery.payload.get("event") or f"alert.{delivery.event}"),
                   "X-Portal-Delivery": str(delivery.uuid)}
        secret = delivery.alert.rule.webhook_secret
        if secret:
            headers["X-Portal-Signature"] = signature(body, secret)
        try:
            code = _post(delivery.url, body, headers)
        except Exception as exc:  # timeouts, refused connections, DNS, TLS: all just a failed attempt
            error = f"{exc.__class__.__name__}: {exc}"[:1000]
        else:
            if not 200 <= code < 300:
                error = f"The receiver answered HTTP {code}."
    delivery.last_status_code, delivery.last_error = code, error
    if not error:
        delivery.status, delivery.delivered_at = WebhookDelivery.Status.DELIVERED, now
    elif delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = WebhookDelivery.Status.FAILED
    else:
        wait = BACKOFF_MINUTES[min(delivery.attempts, len(BACKOFF_MINUTES)) - 1]
        delivery.next_attempt_at = now + timedelta(minutes=wait)
    delivery.save(update_fields=["attempts", "status", "delivered_at", "next_attempt_at", "last_status_code",
                                 "last_error"])
    if error:
        logger.info("Webhook %s attempt %s to %s failed: %s", delivery.uuid, delivery.attempts, delivery.url, error)
    return not error


def deliver_due(now: datetime | None = None) -> int:
    """Attempt every pending delivery whose time has come; return how many were delivered. Never raises."""
    now = now or timezone.now()
    delivered = 0
    due = list(WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now)
               .select_related("alert__rule").order_by("next_attempt_at")[:BATCH])
    for delivery in due:
        # Claim it by moving its next attempt forward, so a second beat run started meanwhile skips it.
        claimed = WebhookDelivery.objects.filter(
            Q(pk=delivery.pk), Q(status=WebhookDelivery.Status.PENDING), Q(next_attempt_at=delivery.next_attempt_at),
        ).update(next_attempt_at=now + timedelta(seconds=TIMEOUT_SECONDS * 6))
        if not claimed:
            continue
        try:
            delivered += deliver(delivery, now=now)
        except Exception:  # a database hiccup on one delivery must not stop the others
            logger.exception("Webhook delivery %s could not be attempted", delivery.uuid)
    return delivered
