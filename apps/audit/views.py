"""The audit page (filterable, paginated) and its CSV export."""

from __future__ import annotations

import csv

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from apps.accounts.permissions import Action, projects_with_action
from apps.audit.models import AuditEvent
from apps.audit.services import csv_rows, filter_events, verify_chain

FILTERS = ("project", "actor", "action", "object", "since", "until")


class _Echo:
    def write(self, value):
        return value


@login_required
def audit_log(request):
    events, errors = filter_events(AuditEvent.objects.visible_to(request.user), request.GET)
    page = Paginator(events.select_related("project"), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "audit/audit_log.html", {
        "page": page, "errors": errors, "filters": {f: request.GET.get(f, "") for f in FILTERS},
        "projects": projects_with_action(request.user, Action.VIEW_AUDIT).order_by("name"),
        "querystring": query.urlencode(),
        "chain": verify_chain() if request.user.is_staff and request.GET.get("verify") else None,
    })


@login_required
def audit_csv(request):
    events, errors = filter_events(AuditEvent.objects.visible_to(request.user), request.GET)
    if errors:
        # Dropping a bad filter would export more than was asked for.
        return HttpResponseBadRequest(
            "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items()),
            content_type="text/plain; charset=utf-8")
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in csv_rows(events)),
                                     content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
