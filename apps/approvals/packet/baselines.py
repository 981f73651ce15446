"""The packet section "Is a simpler model enough?": the version against simple baselines on the same test rows.

Only scores and counts appear (the baseline labels name no class or value of the data).
"""

from __future__ import annotations

from datetime import datetime

from apps.approvals.packet.registry import ORDER_VALIDATION, register_section, when
from apps.registry.evidence.baselines import baselines_problem
from apps.registry.models import ModelVersion

ORDER_BASELINES = ORDER_VALIDATION + 5


def baselines_section(version: ModelVersion, user) -> dict:
    stored = version.baselines
    if not stored:
        problem = baselines_problem(version)
        hint = (f"It cannot be run yet: {problem}" if problem else
                "A data scientist can run it from the model card (“Compare with simple baselines”).")
        return {"comparison": None, "hint": hint}
    computed = datetime.fromisoformat(stored["computed_at"]) if stored.get("computed_at") else None
    registered = stored.get("registered_version")
    return {"comparison": stored, "computed_at": when(computed), "registered_version": registered}


def register() -> None:
    register_section("baselines", "Is a simpler model enough?", ORDER_BASELINES, baselines_section,
                     template="approvals/packet_baselines.html")
