"""The model card's Approvals section, contributed by approvals so that the registry never imports it:
`{% load approvals %}{% approvals_for_version version %}`."""

from __future__ import annotations

from django import template

from apps.accounts.permissions import Action, can
from apps.approvals import services
from apps.approvals.models import ApprovalRequest, Environment
from apps.approvals.views import policy_in_words

register = template.Library()


@register.inclusion_tag("approvals/_card_approvals.html", takes_context=True)
def approvals_for_version(context, version) -> dict:
    user = context["request"].user
    current = {r.environment_id: r for r in services.current_approvals(version)}
    requests = list(version.approvals.select_related("environment", "requested_by").order_by("-created_at"))
    rows = []
    for environment in Environment.objects.filter(project_id=version.model.project_id):
        mine = [r for r in requests if r.environment_id == environment.pk]
        rows.append({
            "environment": environment, "policy": policy_in_words(environment),
            "approval": current.get(environment.pk),
            "pending": [r for r in mine if r.status == ApprovalRequest.Status.PENDING],
            "latest": mine[0] if mine else None,
        })
    return {
        "version": version, "rows": rows, "requests": requests[:10],
        "may_request": can(user, Action.REQUEST_APPROVAL, version) and version.is_servable
        and any(row["environment"].gated for row in rows),
        "project": version.model.project,
        "may_manage": can(user, Action.MANAGE_ENVIRONMENTS, version),
    }
