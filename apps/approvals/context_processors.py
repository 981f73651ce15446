"""The number of approval requests waiting for the signed-in user, for the "Approvals" badge in the header."""

from __future__ import annotations


def approvals(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    waiting = getattr(request, "approvals_waiting", None)  # a page that lists them has asked already
    if waiting is None:
        from apps.approvals.services import waiting_for  # imported late: settings load this module early

        waiting = waiting_for(user)
    return {"nav_approvals_waiting": len(waiting)}
