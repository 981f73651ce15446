"""My jobs page, the job progress fragment (polled by htmx), error pages that answer JSON under /api/, and the
helpers every app's views share."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.core import services
from apps.core.models import Job


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


def server_error(request):
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
