"""The number of approval requests waiting for the signed-in user, for the "Approvals" badge in the header."""

from __future__ import annotations


def approvals(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from apps.approvals.services import waiting_for  # imported late: settings load this module early

    return {"nav_approvals_waiting": len(waiting_for(user))}
