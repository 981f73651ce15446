"""The approval pages: queue, request detail with evidence and decision form, requesting from the card, environments."""

from __future__ import annotations

import pytest

from apps.approvals import services
from apps.approvals.models import ApprovalRequest, Decision, Environment
from apps.audit.models import AuditEvent
from tests.approvals.conftest import ANSWERS

pytestmark = pytest.mark.django_db


def open_request(people, version, environment) -> ApprovalRequest:
    return services.request_approval(version, environment, actor=people["scientist"],
                                     justification="Better recall than the rules", answers=ANSWERS)


def form_answers(**extra) -> dict:
    return {"q_intended_use": "Retention calls", "q_affected_people": "Customers", "q_fairness_checked": "yes",
            "q_fallback_plan": "Agents call everyone", **extra}


def test_queue_tabs_and_waiting_count(people, version, staging, client_as):
    request = open_request(people, version, staging)
    approver = client_as(people["approver"])
    page = approver.get("/approvals/")
    assert page.status_code == 200 and page.context["tab"] == "waiting"
    assert list(page.context["page"].object_list) == [request]
    assert b'data-approvals-waiting>1<' in page.content  # the header badge
    assert list(client_as(people["approver"]).get("/approvals/?tab=mine").context["page"].object_list) == []
    scientist = client_as(people["scientist"])
    mine = scientist.get("/approvals/")
    assert mine.context["tab"] == "mine" and list(mine.context["page"].object_list) == [request]
    assert scientist.get("/approvals/?tab=waiting").context["page"].object_list == []
    assert b"Nothing is waiting for you" not in scientist.get("/approvals/?tab=waiting").content
    everything = approver.get("/approvals/?tab=all&status=approved")
    assert list(everything.context["page"].object_list) == []
    assert list(approver.get("/approvals/?tab=all&project=alpha").context["page"].object_list) == [request]
    assert client_as(people["outsider"]).get("/approvals/?tab=all").context["page"].object_list.count() == 0


def test_detail_shows_policy_evidence_and_the_missing_checklist_items(people, version, production, client_as):
    request = open_request(people, version, production)
    page = client_as(people["viewer"]).get(f"/approvals/{request.uuid}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "2 approvals from approvers; high-risk models need one more; approvals last 30 days" in html
    assert 'data-check="training_data" data-ok="no"' in html and "Link the dataset version" in html
    assert 'data-check="metrics" data-ok="yes"' in html
    assert "/models/churn/v1/" in html and "Retention calls" in html
    assert "Still the exact file" in html
    # A viewer sees it all but cannot act.
    assert "Record my decision" not in html and "Your role in this project cannot decide" in html
    assert "Withdraw this request" not in html


def test_decision_form_records_and_shows_errors(people, approver2, version, production, client_as):
    request = open_request(people, version, production)
    url = f"/approvals/{request.uuid}/decide/"
    approver = client_as(people["approver"])
    assert b"Record my decision" in approver.get(f"/approvals/{request.uuid}/").content
    refused = approver.post(url, {"verdict": "reject", "comment": ""})
    assert refused.status_code == 400 and "a comment is required" in refused.content.decode()
    assert approver.post(url, {"verdict": "approve", "comment": "Sound"}).status_code == 302
    second = client_as(approver2).post(url, {"verdict": "approve", "comment": "Agreed"}, follow=True)
    assert "Your decision (approve) is recorded" in second.content.decode()
    request.refresh_from_db()
    assert request.status == "approved" and request.decisions.count() == 2
    card = client_as(people["scientist"]).get("/models/churn/v1/").content.decode()
    assert 'data-environment="production"' in card and "Approved" in card


def test_self_approval_shows_why_and_is_refused(people, version, staging, client_as):
    request = open_request(people, version, staging)
    scientist = client_as(people["scientist"])
    page = scientist.get(f"/approvals/{request.uuid}/").content.decode()
    assert "Record my decision" not in page and "Your role in this project cannot decide" in page
    # An admin who may decide in general, but requested this one: separation of duties.
    other = services.create_environment(request.project, actor=people["admin"], name="prod2")
    own = services.request_approval(version, other, actor=people["admin"], justification="x", answers=ANSWERS)
    admin = client_as(people["admin"])
    assert "someone else must decide" in admin.get(f"/approvals/{own.uuid}/").content.decode()
    refused = admin.post(f"/approvals/{own.uuid}/decide/", {"verdict": "approve", "comment": ""})
    assert refused.status_code == 403 and "someone else must decide" in refused.content.decode()
    assert not Decision.objects.filter(request=own).exists()
    assert AuditEvent.objects.filter(action="approval.self_decision_refused").exists()


def test_withdraw_by_the_requester_only(people, version, staging, client_as):
    request = open_request(people, version, staging)
    url = f"/approvals/{request.uuid}/withdraw/"
    assert b"Withdraw this request" in client_as(people["scientist"]).get(f"/approvals/{request.uuid}/").content
    assert client_as(people["approver"]).post(url).status_code == 403
    assert client_as(people["scientist"]).post(url, {"reason": "Wrong version"}).status_code == 302
    request.refresh_from_db()
    assert request.status == "withdrawn"
    again = client_as(people["scientist"]).post(url, follow=True)
    assert "Only a request that is waiting" in again.content.decode()


def test_request_approval_form_validates_and_creates(people, version, staging, production, client_as):
    url = "/models/churn/v1/request-approval/"
    scientist = client_as(people["scientist"])
    page = scientist.get(url + "?environment=production")
    assert page.status_code == 200 and page.context["environment"] == production
    assert 'data-check="training_data" data-ok="no"' in page.content.decode()  # the checklist preview
    missing = scientist.post(url, {"environment": production.pk, "justification": "", **form_answers(
        q_fairness_checked="")})
    assert missing.status_code == 400
    assert set(missing.context["form"].errors) >= {"justification", "q_fairness_checked"}
    preview = scientist.post(url, {"environment": staging.pk, "preview": "1"})
    assert preview.status_code == 200 and not ApprovalRequest.objects.exists()
    done = scientist.post(url, {"environment": production.pk, "justification": "Better", **form_answers()})
    created = ApprovalRequest.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/approvals/{created.uuid}/"
    assert created.answers["fairness_checked"] is True and created.requested_by == people["scientist"]
    twice = scientist.post(url, {"environment": production.pk, "justification": "Better", **form_answers()})
    assert twice.status_code == 400 and "already has a request waiting" in twice.content.decode()
    card = scientist.get("/models/churn/v1/").content.decode()
    assert "Request approval" in card and "Waiting for decisions" in card
    assert client_as(people["viewer"]).get(url).status_code == 403
    assert "Request approval</a>" not in client_as(people["viewer"]).get("/models/churn/v1/").content.decode()


def test_environment_admin_create_edit_and_403(people, project, client_as):
    admin = client_as(people["admin"])
    new = {"name": "production", "required_approvals": "2", "approver_roles": ["approver"],
           "high_risk_extra_approval": "on", "approval_valid_days": "90", "request_expiry_days": "14",
           "questions": "What is it for?\nyes/no: Fairness checked?\nAnything else? (optional)"}
    assert admin.post("/projects/alpha/environments/new/", new).status_code == 302
    env = Environment.objects.get(slug="production")
    assert env.required_approvals == 2 and env.approver_roles == ["approver"] and env.approval_valid_days == 90
    assert [q["kind"] for q in env.questions] == ["text", "yes_no", "text"] and not env.questions[2]["required"]
    listing = admin.get("/projects/alpha/environments/").content.decode()
    assert "2 approvals from approvers; high-risk models need one more; approvals last 90 days" in listing
    edit_url = "/projects/alpha/environments/production/edit/"
    assert "yes/no: Fairness checked?" in admin.get(edit_url).content.decode()
    bad = admin.post(edit_url, {**new, "required_approvals": "11"})
    assert bad.status_code == 400
    assert admin.post(edit_url, {**new, "required_approvals": "3", "reauth_required": "on"}).status_code == 302
    env.refresh_from_db()
    assert env.required_approvals == 3 and env.reauth_required
    assert client_as(people["scientist"]).get(edit_url).status_code == 403
    assert client_as(people["scientist"]).post("/projects/alpha/environments/new/", new).status_code == 403
    assert "New environment" not in client_as(people["viewer"]).get("/projects/alpha/environments/").content.decode()


def test_reauth_environment_asks_for_the_password(people, version, staging, client_as):
    services.update_environment(staging, actor=people["admin"], reauth_required=True)
    request = open_request(people, version, staging)
    approver = client_as(people["approver"])
    assert b'type="password"' in approver.get(f"/approvals/{request.uuid}/").content
    wrong = approver.post(f"/approvals/{request.uuid}/decide/", {"verdict": "approve", "password": "nope"})
    assert wrong.status_code == 400 and "Enter your password again" in wrong.content.decode()


def test_outsiders_get_404_everywhere(people, version, staging, client_as):
    request = open_request(people, version, staging)
    outsider = client_as(people["outsider"])
    for url in (f"/approvals/{request.uuid}/", "/models/churn/v1/request-approval/",
                "/projects/alpha/environments/", "/projects/alpha/environments/staging/edit/"):
        assert outsider.get(url).status_code == 404, url
    for url in (f"/approvals/{request.uuid}/decide/", f"/approvals/{request.uuid}/withdraw/"):
        assert outsider.post(url, {"verdict": "approve"}).status_code == 404, url
