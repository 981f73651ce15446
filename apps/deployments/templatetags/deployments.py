"""The model card's Deployments section, contributed by deployments so that the registry never imports it:
`{% load deployments %}{% deployments_for_version version %}`."""

from __future__ import annotations

from django import template

from apps.accounts.permissions import Action, can
from apps.deployments import services

register = template.Library()

ROLE_WORDS = {"champion": "Champion: answers requests", "fallback": "Fallback: what a rollback restores",
              "challenger": "Challenger", "retired": "No longer serves"}


@register.inclusion_tag("deployments/_card_deployments.html", takes_context=True)
def deployments_for_version(context, version) -> dict:
    user = context["request"].user
    rows = services.deployments_of_version(version)
    for row in rows:
        row["role_label"] = ROLE_WORDS.get(row["role"], row["role"])
    return {
        "version": version, "rows": rows,
        "may_deploy": can(user, Action.DEPLOY, version) and version.is_servable,
        "may_deploy_role": can(user, Action.DEPLOY, version),
    }
