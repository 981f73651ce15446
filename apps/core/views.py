"""My jobs page, the job progress fragment (polled by htmx), error pages that answer JSON under /api/, and the
helpers every app's views share."""

from __future__ import annotations

import logging
import sys

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_POST

from apps.core import services
from apps.core.models import Job

logger = logging.getLogger(__name__)


def form_errors_from(exc: ValidationError, form) -> None:
    """A service's ValidationError shown on the form: next to the field it names, else above the form."""
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


def redirect_after_post(request, url: str) -> HttpResponse:
    """Where a form post goes next: htmx follows HX-Redirect with a full page load; plain posts get a 302."""
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


@login_required
def job_list(request):
    jobs = Job.objects.visible_to(request.user).select_related("project", "created_by")
    page = Paginator(jobs, 25).get_page(request.GET.get("page"))
    return render(request, "core/job_list.html", {"page": page})


@login_required
def job_detail(request, job_id):
    job = get_object_or_404(Job.objects.visible_to(request.user), pk=job_id)
    if request.htmx:
        return render(request, "components/job_progress.html", {"job": job})
    return render(request, "core/job_detail.html", {"job": job})


@login_required
@require_POST
def system_check(request):
    job = services.start_system_check(actor=request.user)
    messages.info(request, "System check started. This page updates as it runs.")
    return redirect("job-detail", job_id=job.id)


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "errors": {}}, status=404)
    return render(request, "404.html", status=404)


# --- A backing service that does not answer (the database, or Redis as cache): 503 with Retry-After ----------
# Django turns an exception raised anywhere in a request (a view, DRF, or a middleware such as the session's) into
# a response by calling handler500 inside its `except` block, so server_error sees it in sys.exc_info(). Nothing
# on this path may touch the database: the 503 page is rendered without a request context (context processors
# query it).

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
    """handler500: an outage answers 503 (the client may retry), anything else the 500 page."""
    exc = sys.exc_info()[1]
    if is_outage(exc):
        logger.warning("%s %s: backing service unavailable (%s: %s)", request.method, request.path,
                       type(exc).__name__, exc)
        return unavailable(request, exc)
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal error; it has been logged. Try again later.", "errors": {}},
                            status=500)
    return render(request, "500.html", status=500)


def healthz(request):
    """Liveness/readiness for load balancers and docker-compose: 200 when the database answers."""
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not ready"
        return JsonResponse({"ok": False, "database": type(exc).__name__}, status=503)
    return JsonResponse({"ok": True, "database": "ok"})
