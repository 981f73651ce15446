"""The audit packet's "Deployments" section: where a version served, and every change made while it did (who,
when, why). Registered from DeploymentsConfig.ready(), so approvals never imports deployments."""

from __future__ import annotations

from django.db.models import Q

from apps.approvals.packet import ORDER_DEPLOYMENTS, register_section, when
from apps.deployments import services
from apps.deployments.models import DeploymentEvent
from apps.registry.models import ModelVersion

MAX_EVENTS = 500
ROLE_WORDS = {"champion": "Champion (serving now)", "fallback": "Fallback (what a rollback restores)",
              "challenger": "Challenger", "retired": "No longer serves"}


def _who(event: DeploymentEvent) -> str:
    return event.actor.get_username() if event.actor else (event.actor_label or "system")


def deployments_section(version: ModelVersion, user) -> dict | None:
    deployments = services.deployments_of_version(version)
    if not deployments:
        return None  # never deployed: the packet leaves the section out
    events = list(DeploymentEvent.objects.filter(Q(champion=version) | Q(previous_champion=version))
                  .select_related("deployment__environment", "champion__model", "previous_champion__model", "actor")
                  .order_by("created_at", "id")[:MAX_EVENTS + 1])
    notes = []
    if len(events) > MAX_EVENTS:
        events = events[:MAX_EVENTS]
        notes.append(f"The first {MAX_EVENTS} changes are listed; the deployment's history API lists them all.")
    rows = []
    for event in events:
        if event.champion_id == version.pk:
            what = event.get_kind_display()
        else:  # this version was replaced by another
            what = f"{event.get_kind_display()}: {event.champion} replaced this version"
        rows.append([when(event.created_at), event.deployment.name, event.deployment.environment.name, what,
                     _who(event), event.reason or "—"])
    return {
        "intro": "Where this version served, and every change to those deployments while it was the champion "
                 "or when it was replaced.",
        "tables": [
            {"caption": "Deployments", "columns": ["Deployment", "Environment", "Role now", "First live"],
             "rows": [[d["deployment"].name, d["environment"].name, ROLE_WORDS.get(d["role"], d["role"]),
                       when(d["first_live"])] for d in deployments]},
            {"caption": "Changes", "columns": ["When", "Deployment", "Environment", "Change", "By", "Why"],
             "rows": rows},
        ],
        "notes": notes,
    }


def register() -> None:
    register_section("deployments", "Deployments", ORDER_DEPLOYMENTS, deployments_section)
