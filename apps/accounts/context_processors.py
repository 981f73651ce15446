"""What base.html needs on every page: the user's projects (for the switcher) and which menus to show."""

from __future__ import annotations

from apps.accounts.models import Membership, Notification


def navigation(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    memberships = list(Membership.objects.filter(user=user).select_related("project").order_by("project__name"))
    roles = {m.role for m in memberships}
    current = request.session.get("current_project")
    return {
        "nav_memberships": memberships,
        # The project last opened, else the user's first: project menus (Datasets, …) always have a target.
        "nav_current_project": next((m.project for m in memberships if m.project.slug == current),
                                    memberships[0].project if memberships else None),
        "nav_can_view_audit": user.is_staff or bool(roles & {Membership.Role.ADMIN, Membership.Role.APPROVER}),
        "nav_can_manage": user.is_staff or Membership.Role.ADMIN in roles,
        "nav_admin_projects": [m.project for m in memberships if m.role == Membership.Role.ADMIN],
    }


def notifications(request) -> dict:
    """The unread count for the bell in the header (one query per page)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"nav_unread_notifications": Notification.objects.for_user(user).unread().count()}
