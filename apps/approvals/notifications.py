"""Who hears about approvals, and what they read: requests opened, decisions, outcomes, reminders, re-certification.

Called explicitly by approvals.services (no post_save chains) and by the daily beat task (remind_pending).
Every message goes through accounts' notify(): in-app, and e-mail after commit.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.accounts.models import Notification
from apps.accounts.notifications import notify
from apps.accounts.permissions import can_see
from apps.approvals.models import ApprovalRequest, Decision

User = get_user_model()

#: The approval request page, once the approvals pages provide it (reverse(name, args=[request.uuid])).
REQUEST_PAGE = "approval-detail"
RECERTIFY_BEFORE = dt.timedelta(days=30)
# Beat runs the reminder task every 24 h, and each run's rows are stamped a little after the run starts; a gap of
# exactly 24 h would skip every other day. 23 h keeps it to one reminder a day.
REMINDER_GAP = dt.timedelta(hours=23)

CLOSED_WORDS = {
    ApprovalRequest.Status.APPROVED: "approved",
    ApprovalRequest.Status.REJECTED: "rejected",
    ApprovalRequest.Status.CHANGES_REQUESTED: "sent back with changes requested",
    ApprovalRequest.Status.EXPIRED: "expired",
    ApprovalRequest.Status.VOID: "void: the model version changed",
}
VERDICT_WORDS = {Decision.Verdict.APPROVE: "approved", Decision.Verdict.REJECT: "rejected",
                 Decision.Verdict.REQUEST_CHANGES: "requested changes to"}


def request_path(request: ApprovalRequest) -> str:
    """Where a message about `request` links: its page, or (until that page exists) the version's model card."""
    try:
        return reverse(REQUEST_PAGE, args=[request.uuid])
    except NoReverseMatch:
        version = request.model_version
        return reverse("model-version", args=[version.model.slug, version.number]) + f"#approval-{request.uuid}"


def _fresh(request: ApprovalRequest) -> ApprovalRequest:
    # Callers may hold an instance from before the status changed (e.g. expire_due's loop).
    return ApprovalRequest.objects.select_related(
        "environment__project", "model_version__model__owner", "model_version__created_by", "requested_by",
    ).get(pk=request.pk)


def deciders(request: ApprovalRequest) -> list:
    """Active members whose role decides in the request's environment, minus the requester and the version's
    creator (separation of duties) and anyone who has already decided."""
    excluded = {request.requested_by_id, request.model_version.created_by_id}
    decided = set(request.decisions.values_list("approver_id", flat=True))
    users = User.objects.filter(
        is_active=True, memberships__project=request.environment.project,
        memberships__role__in=request.environment.deciding_roles(),
    ).order_by("username")
    return [u for u in users if u.pk not in excluded | decided]


def _still_members(request: ApprovalRequest, *users) -> list:
    """Only people who can still see the project hear about it (a removed member is told nothing)."""
    return [u for u in users if u is not None and can_see(u, request.environment.project)]


def _about(request: ApprovalRequest) -> str:
    return f"{request.model_version} → {request.environment.name}"


def request_opened(request: ApprovalRequest) -> list[Notification]:
    """Tell every member who may decide that a request waits for them."""
    request = _fresh(request)
    needed = request.required_approvals
    body = (f"{request.requested_by or 'Someone'} asks for approval to run {request.model_version} in "
            f"{request.environment.name} ({request.environment.project.name}). It needs {needed} "
            f"approval{'' if needed == 1 else 's'}.\n\nJustification: {request.justification[:1000]}")
    return notify(deciders(request), kind="approval.requested", title=f"Approval requested: {_about(request)}",
                  body=body, url=request_path(request), project=request.environment.project)


def decision_made(decision: Decision) -> list[Notification]:
    """Tell the requester about a decision that left the request waiting for others.

    A decision that ended the request is told by request_closed() (called where the request closes), with the
    decision's comment, so the requester gets one message per decision, not two.
    """
    request = _fresh(decision.request)
    if request.status != ApprovalRequest.Status.PENDING:
        return []
    approvals = request.decisions.filter(verdict=Decision.Verdict.APPROVE).count()
    body = (f"{decision.approver} {VERDICT_WORDS.get(decision.verdict, decision.verdict)} your request to run "
            f"{request.model_version} in {request.environment.name}. Approvals so far: {approvals} of "
            f"{request.required_approvals}.")
    if decision.comment:
        body += f"\n\nComment: {decision.comment[:2000]}"
    return notify(_still_members(request, request.requested_by), kind="approval.decision",
                  title=f"{decision.approver} {VERDICT_WORDS.get(decision.verdict, decision.verdict)} "
                        f"{_about(request)}",
                  body=body, url=request_path(request), project=request.environment.project)


def request_closed(request: ApprovalRequest) -> list[Notification]:
    """Tell the requester and the model's owner how a request ended (nothing for pending or withdrawn ones).

    Safe inside the transaction that closed it (the rows commit with the close, e-mail follows the commit) and with
    a stale instance (the request is read again)."""
    request = _fresh(request)
    outcome = CLOSED_WORDS.get(request.status)
    if outcome is None:
        return []
    body = f"The request to run {request.model_version} in {request.environment.name} was {outcome}."
    if request.status == ApprovalRequest.Status.APPROVED and request.expires_at:
        body += f" The approval is valid until {request.expires_at:%Y-%m-%d}."
    last = request.decisions.select_related("approver").order_by("-created_at").first()
    if request.status in (ApprovalRequest.Status.REJECTED, ApprovalRequest.Status.CHANGES_REQUESTED) and last:
        body += f"\n\n{last.approver} wrote: {last.comment[:2000]}"
    elif request.closed_reason:
        body += f"\n\n{request.closed_reason[:2000]}"
    recipients = _still_members(request, request.requested_by, request.model_version.model.owner)
    return notify(recipients, kind=f"approval.{request.status}", title=f"{_about(request)}: {outcome}",
                  body=body, url=request_path(request), project=request.environment.project)


# --- Beat: reminders and re-certification --------------------------------------------------------------------


def remind_pending(now: dt.datetime | None = None) -> int:
    """Remind deciders of requests waiting longer than PORTAL_APPROVAL_REMINDER_DAYS (once a day per request), and
    owners of approvals that expire within 30 days (once per approval). Returns the notifications created."""
    now = now or timezone.now()
    return _remind_deciders(now) + _recertification_notices(now)


def _remind_deciders(now: dt.datetime) -> int:
    days = settings.PORTAL_APPROVAL_REMINDER_DAYS
    if days <= 0:  # 0 turns reminders off
        return 0
    count = 0
    waiting = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING,
                                             created_at__lte=now - dt.timedelta(days=days)).exclude(expires_at__lte=now)
    for request in waiting.select_related("environment__project", "model_version__model", "requested_by"):
        url = request_path(request)
        if Notification.objects.filter(kind="approval.reminder", url=url, created_at__gt=now - REMINDER_GAP).exists():
            continue
        waited = (now - request.created_at).days
        body = (f"{request.requested_by or 'Someone'} asked {waited} days ago for approval to run "
                f"{request.model_version} in {request.environment.name}, and it still waits for your decision.")
        if request.expires_at:
            body += f" The request expires on {request.expires_at:%Y-%m-%d}."
        count += len(notify(deciders(request), kind="approval.reminder", title=f"Waiting for you: {_about(request)}",
                            body=body, url=url, project=request.environment.project))
    return count


def _recertification_notices(now: dt.datetime) -> int:
    count = 0
    expiring = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.APPROVED, expires_at__gt=now,
                                              expires_at__lte=now + RECERTIFY_BEFORE)
    for request in expiring.select_related("environment__project", "model_version__model__owner", "requested_by"):
        url = request_path(request)
        if not request.artifact_matches() or Notification.objects.filter(kind="approval.recertify", url=url).exists():
            continue
        owner = request.model_version.model.owner
        recipients = _still_members(request, owner if owner and owner.is_active else request.requested_by)
        body = (f"The approval to run {request.model_version} in {request.environment.name} ends on "
                f"{request.expires_at:%Y-%m-%d}. Request re-approval before then, or the model may no longer run "
                "there.")
        count += len(notify(recipients, kind="approval.recertify",
                            title=f"Request re-approval before {request.expires_at:%Y-%m-%d}: {_about(request)}",
                            body=body, url=url, project=request.environment.project))
    return count
