"""Who hears what about approvals: a request opened, each decision, the outcome, reminders, re-certification."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.utils import timezone

from apps.accounts.models import Membership, Notification
from apps.approvals import notifications, services, tasks
from apps.approvals.models import ApprovalRequest
from tests.approvals.conftest import ANSWERS
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def open_request(people, version, environment):
    return services.request_approval(version, environment, actor=people["scientist"],
                                     justification="Better recall than the rules", answers=ANSWERS)


def forget():
    """Drop what the services told already (once they call these functions), to test one call at a time."""
    Notification.objects.all().delete()


def told(kind=None):
    """{username: [titles]} of the notifications written so far (optionally of one kind)."""
    rows = Notification.objects.select_related("recipient").order_by("created_at", "id")
    if kind:
        rows = rows.filter(kind=kind)
    result: dict[str, list[str]] = {}
    for n in rows:
        result.setdefault(n.recipient.username, []).append(n.title)
    return result


@pytest.fixture
def owner(people, version):
    user = make_user("owner")
    Membership.objects.create(user=user, project=version.model.project, role=Membership.Role.SCIENTIST)
    version.model.owner = user
    version.model.save(update_fields=["owner"])
    return user


def test_deciders_hear_of_a_new_request_but_not_the_requester(people, approver2, version, staging,
                                                              django_capture_on_commit_callbacks):
    request = open_request(people, version, staging)
    forget()
    with django_capture_on_commit_callbacks(execute=True):
        created = notifications.request_opened(request)
    # staging lets approvers and admins decide; the scientist requested and created the version
    assert sorted(told("approval.requested")) == ["admin", "approver", "approver2"]
    assert created[0].url == f"/approvals/{request.uuid}/" and created[0].project == staging.project
    assert created[0].title == "Approval requested: Churn v1 → staging"
    assert "Better recall than the rules" in created[0].body and "needs 1 approval." in created[0].body
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@example.org", "approver2@example.org",
                                                    "approver@example.org"]
    assert f"/approvals/{request.uuid}/" in mail.outbox[0].body


def test_only_the_roles_the_environment_names_are_told(people, approver2, version, production):
    request = open_request(people, version, production)
    forget()
    notifications.request_opened(request)
    assert sorted(told()) == ["approver", "approver2"]  # production: approvers only, not admins


def test_the_versions_creator_and_inactive_members_are_not_asked(people, approver2, version, staging):
    version.created_by = people["approver"]
    version.save(update_fields=["created_by"])
    approver2.is_active = False
    approver2.save()
    request = open_request(people, version, staging)
    forget()
    notifications.request_opened(request)
    assert sorted(told()) == ["admin"]


def test_the_requester_hears_of_each_decision_while_the_request_waits(people, approver2, version, production):
    request = open_request(people, version, production)
    decision = services.decide(request, actor=people["approver"], verdict="approve", comment="Metrics hold up")
    forget()
    created = notifications.decision_made(decision)
    assert told() == {"scientist": ["approver approved Churn v1 → production"]}
    assert "Approvals so far: 1 of 2" in created[0].body and "Metrics hold up" in created[0].body


def test_the_final_approval_tells_the_requester_and_the_owner_once(people, approver2, owner, version, production,
                                                                   django_capture_on_commit_callbacks):
    request = open_request(people, version, production)
    notifications.decision_made(services.decide(request, actor=people["approver"], verdict="approve"))
    final = services.decide(request, actor=approver2, verdict="approve")
    forget()
    with django_capture_on_commit_callbacks(execute=True):
        notifications.request_closed(request)  # the services hook: where the request closes
        # the decision that ends the request is told as the outcome: one message each, not two
        assert notifications.decision_made(final) == []
    assert told() == {"scientist": ["Churn v1 → production: approved"], "owner": ["Churn v1 → production: approved"]}
    assert Notification.objects.filter(kind="approval.approved").count() == 2
    assert "valid until" in Notification.objects.first().body and len(mail.outbox) == 2


def test_a_rejection_tells_the_requester_and_owner_with_the_comment(people, owner, version, staging):
    request = open_request(people, version, staging)
    services.decide(request, actor=people["approver"], verdict="reject", comment="No fairness check")
    forget()
    notifications.request_closed(request)
    assert told() == {"scientist": ["Churn v1 → staging: rejected"], "owner": ["Churn v1 → staging: rejected"]}
    assert "approver wrote: No fairness check" in Notification.objects.first().body


def test_changes_requested_is_an_outcome_too(people, version, staging):
    request = open_request(people, version, staging)
    services.decide(request, actor=people["approver"], verdict="request_changes", comment="Link the training data")
    forget()
    notifications.request_closed(request)
    assert told("approval.changes_requested") == {"scientist": ["Churn v1 → staging: sent back with changes requested"]}


def test_expiry_and_void_are_told_withdrawal_and_pending_are_not(people, owner, version, staging, production):
    expired = open_request(people, version, staging)
    ApprovalRequest.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    services.expire_due()
    forget()
    notifications.request_closed(expired)  # a stale instance: the function reads the request again
    assert sorted(told("approval.expired")) == ["owner", "scientist"]
    assert "Nobody decided" in Notification.objects.filter(kind="approval.expired").first().body

    withdrawn = open_request(people, version, production)
    assert notifications.request_closed(withdrawn) == []  # still pending
    services.withdraw(withdrawn, actor=people["scientist"])
    assert notifications.request_closed(withdrawn) == []
    ApprovalRequest.objects.filter(pk=withdrawn.pk).update(status=ApprovalRequest.Status.VOID)
    assert len(notifications.request_closed(withdrawn)) == 2


def test_a_removed_member_is_not_told(people, owner, version, staging):
    request = open_request(people, version, staging)
    Membership.objects.filter(user=owner).delete()
    services.decide(request, actor=people["approver"], verdict="approve")
    forget()
    notifications.request_closed(request)
    assert sorted(told()) == ["scientist"]


def test_messages_link_to_the_model_card_while_there_is_no_request_page(people, version, staging, monkeypatch):
    monkeypatch.setattr(notifications, "REQUEST_PAGE", "no-such-page")
    request = open_request(people, version, staging)
    assert notifications.request_path(request) == f"/models/churn/v1/#approval-{request.uuid}"


def test_the_services_send_the_notifications_themselves(people, owner, version, staging, production):
    request = open_request(people, version, staging)
    assert sorted(told("approval.requested")) == ["admin", "approver"]
    services.decide(request, actor=people["approver"], verdict="approve")
    assert sorted(told("approval.approved")) == ["owner", "scientist"]
    assert Notification.objects.count() == 4  # no separate decision notice for the decision that closed it
    waiting = open_request(people, version, production)
    ApprovalRequest.objects.filter(pk=waiting.pk).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    services.expire_due()
    assert sorted(told("approval.expired")) == ["owner", "scientist"]


# --- Reminders and re-certification ---------------------------------------------------------------------------


def age(request, days):
    ApprovalRequest.objects.filter(pk=request.pk).update(created_at=timezone.now() - dt.timedelta(days=days))


def test_deciders_who_have_not_decided_are_reminded_once_a_day(people, approver2, version, production, settings):
    settings.PORTAL_APPROVAL_REMINDER_DAYS = 3
    request = open_request(people, version, production)
    services.decide(request, actor=people["approver"], verdict="approve")
    age(request, 2)
    assert notifications.remind_pending() == 0  # not yet waiting long enough
    age(request, 4)
    assert notifications.remind_pending() == 1
    assert told("approval.reminder") == {"approver2": ["Waiting for you: Churn v1 → production"]}
    assert "4 days ago" in Notification.objects.get(kind="approval.reminder").body
    assert notifications.remind_pending() == 0  # once a day
    assert tasks.remind_pending_task() == 0  # the beat task runs the same
    Notification.objects.filter(kind="approval.reminder").update(created_at=timezone.now() - dt.timedelta(hours=23))
    assert notifications.remind_pending() == 1  # the next day
    assert Notification.objects.filter(kind="approval.reminder").count() == 2


def test_no_reminders_for_closed_or_expired_requests_or_when_turned_off(people, version, staging, production,
                                                                         settings):
    closed = open_request(people, version, staging)
    services.decide(closed, actor=people["approver"], verdict="approve")
    overdue = open_request(people, version, production)
    ApprovalRequest.objects.filter(pk=overdue.pk).update(expires_at=timezone.now() - dt.timedelta(hours=1))
    age(closed, 10)
    age(overdue, 10)
    assert notifications.remind_pending() == 0
    ApprovalRequest.objects.filter(pk=overdue.pk).update(expires_at=None)
    settings.PORTAL_APPROVAL_REMINDER_DAYS = 0
    assert notifications.remind_pending() == 0
    settings.PORTAL_APPROVAL_REMINDER_DAYS = 3
    assert notifications.remind_pending() == 1  # production: the one approver


def approved(people, version, environment, *, expires_in):
    request = open_request(people, version, environment)
    services.decide(request, actor=people["approver"], verdict="approve")
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() + expires_in)
    request.refresh_from_db()
    return request


def test_the_owner_is_asked_to_recertify_once_within_30_days_of_expiry(people, owner, version, staging):
    request = approved(people, version, staging, expires_in=dt.timedelta(days=40))
    assert notifications.remind_pending() == 0  # not yet
    ApprovalRequest.objects.filter(pk=request.pk).update(expires_at=timezone.now() + dt.timedelta(days=29))
    assert notifications.remind_pending() == 1
    day = (timezone.now() + dt.timedelta(days=29)).strftime("%Y-%m-%d")
    assert told("approval.recertify") == {"owner": [f"Request re-approval before {day}: Churn v1 → staging"]}
    Notification.objects.update(created_at=timezone.now() - dt.timedelta(days=5))
    assert notifications.remind_pending() == 0  # once per approval, not daily


def test_without_an_owner_the_requester_is_asked_to_recertify(people, version, staging):
    approved(people, version, staging, expires_in=dt.timedelta(days=5))
    assert notifications.remind_pending() == 1
    assert list(told("approval.recertify")) == ["scientist"]


def test_no_recertification_notice_for_a_changed_artifact_or_an_expired_approval(people, owner, version, staging):
    approved(people, version, staging, expires_in=-dt.timedelta(days=1))
    changed = approved(people, version, staging, expires_in=dt.timedelta(days=5))
    assert changed.status == ApprovalRequest.Status.APPROVED
    ApprovalRequest.objects.filter(pk=changed.pk).update(bound_sha256="c" * 64)
    assert notifications.remind_pending() == 0
