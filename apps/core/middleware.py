"""When a service the portal needs does not answer (the database, or Redis as cache), say so: 503 with Retry-After.

Django turns an exception raised anywhere in a request (a view, DRF, or another middleware such as the session's)
into a response by calling `handler500` inside its `except` block, so the handler sees the exception in
`sys.exc_info()`. `server_error` (portal/urls.py's handler500) answers an outage with 503 and Retry-After (JSON under
/api/, a plain page elsewhere) and leaves every other error to the ordinary 500 page. Nothing here may touch the
database: the page is rendered without a request context (context processors query it).
"""

from __future__ import annotations

import logging
import sys

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30


def _outage_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OperationalError, InterfaceError]
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency; without it there is no Redis to lose
        pass
    else:
        types += [RedisConnectionError, RedisTimeoutError]
    return tuple(types)


def is_outage(exc: BaseException | None) -> bool:
    """Whether `exc` means a backing service did not answer (rather than a bug): the connection failed or dropped."""
    return exc is not None and isinstance(exc, _outage_types())


def unavailable(request, exc: BaseException | None = None) -> HttpResponse:
    """503 with Retry-After; JSON for API clients, a plain page (no database, no session) for people."""
    what = "the database" if isinstance(exc, OperationalError | InterfaceError) else "a service it needs"
    detail = (f"The portal cannot reach {what} right now; nothing was changed. "
              f"Try again in {RETRY_AFTER_SECONDS} seconds.")
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": detail, "errors": {}}, status=503)
    else:
        response = HttpResponse(render_to_string("503.html", {"detail": detail}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


def server_error(request):
    """portal/urls.py's handler500: an outage answers 503 (the client may retry), anything else the 500 page."""
    exc = sys.exc_info()[1]
    if is_outage(exc):
        logger.warning("%s %s: backing service unavailable (%s: %s)", request.method, request.path,
                       type(exc).__name__, exc)
        return unavailable(request, exc)
    from apps.core.views import server_error as plain_server_error

    return plain_server_error(request)
