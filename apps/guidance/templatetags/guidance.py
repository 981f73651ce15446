"""Guidance in other pages: the first-run tour (base.html), the readiness checklist (card, Operations Center)."""

from __future__ import annotations

from django import template

from apps.guidance import readiness, tour

register = template.Library()

# The tour shows where people start (home, the Operations Center) and on Help, not on every page: it would
# crowd working pages such as the import wizard, and "Next tip" must never compete with a form's "Next".
TOUR_PAGES = {"home", "operations", "guidance-help"}


@register.inclusion_tag("guidance/_tour.html", takes_context=True)
def guidance_tour(context) -> dict:
    """The tour panel for the signed-in person's role, until they dismiss it (one query on each page)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"show": False}
    match = getattr(request, "resolver_match", None)
    if match is None or match.url_name not in TOUR_PAGES:
        return {"show": False}
    role = tour.tour_role(user, context.get("nav_memberships"))
    if not tour.should_show(user, role):
        return {"show": False}
    return {"show": True, "role": role, "role_label": tour.Role(role).label, "request": request,
            "steps": tour.steps(role, context.get("nav_current_project")), "csrf_token": context.get("csrf_token")}


@register.inclusion_tag("guidance/_readiness.html", takes_context=True)
def readiness_checklist(context, version) -> dict:
    """The full checklist of one version (the model card)."""
    return {"checklist": readiness.for_version(version, context["request"].user), "heading_level": 2}


@register.simple_tag(takes_context=True)
def annotate_readiness(context, deployments) -> str:
    """Sets `.readiness` on each deployment of a page in a fixed number of queries (the Operations Center)."""
    checklists = readiness.for_deployments(deployments, context["request"].user)
    for deployment in deployments:
        deployment.readiness = checklists.get(deployment.pk)
    return ""
