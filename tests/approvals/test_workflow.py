"""The approval state machine through the API: request, quorum, separation of duties, binding, expiry, races."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from apps.approvals import services
from apps.approvals.models import ApprovalRequest, Decision
from apps.approvals.signals import approval_granted
from apps.audit.models import AuditEvent
from apps.registry.models import ModelVersion
from tests.approvals.conftest import ANSWERS

pytestmark = pytest.mark.django_db


def open_request(api, version, env, **extra):
    body = {"model_version": str(version.uuid), "environment": env.slug,
            "justification": "Better recall than the rules", "answers": ANSWERS, **extra}
    return api.post("/api/v1/approvals/", body, format="json")


def decide(api, request_id, verdict="approve", comment="Looks sound", **extra):
    return api.post(f"/api/v1/approvals/{request_id}/decisions/", {"verdict": verdict, "comment": comment, **extra},
                    format="json")


def test_admins_manage_environment_policies(people, project, api_as):
    admin = api_as(people["admin"])
    created = admin.post("/api/v1/environments/", {"project": "alpha", "name": "production", "required_approvals": 2,
                                                   "approver_roles": ["approver"], "approval_valid_days": 30},
                         format="json")
    assert created.status_code == 201, created.content
    assert created.json()["gated"] is True and len(created.json()["questionnaire"]) == 4
    url = f"/api/v1/environments/{created.json()['id']}/"
    assert admin.patch(url, {"required_approvals": 11}, format="json").status_code == 400
    assert admin.patch(url, {"approver_roles": ["viewer"]}, format="json").json()["errors"]["approver_roles"]
    assert admin.patch(url, {"reauth_required": True}, format="json").json()["reauth_required"] is True
    assert api_as(people["scientist"]).post("/api/v1/environments/", {"project": "alpha", "name": "x"},
                                            format="json").status_code == 403
    assert api_as(people["outsider"]).get(url).status_code == 404
    assert AuditEvent.objects.filter(action__in=["environment.create", "environment.update"]).count() == 2


def test_a_request_carries_its_evidence_and_a_checklist_of_what_is_missing(people, version, staging, api_as):
    response = open_request(api_as(people["scientist"]), version, staging)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending" and body["required_approvals"] == 1
    checklist = {item["key"]: item for item in body["evidence"]["checklist"]}
    assert checklist["metrics"]["ok"] and not checklist["training_data"]["ok"]
    assert "Link the dataset version" in checklist["training_data"]["detail"]
    assert not checklist["validation"]["ok"] and checklist["champion"]["ok"] is None
    assert body["bound_sha256"] == "a" * 64 and body["artifact_matches"] is True
    again = open_request(api_as(people["scientist"]), version, staging)
    assert again.status_code == 400 and "already has a request waiting" in again.json()["errors"]["model_version"][0]


def test_request_validation_names_the_field(people, version, staging, api_as):
    api = api_as(people["scientist"])
    missing = open_request(api, version, staging, answers={"intended_use": "x"})
    assert missing.status_code == 400 and "answers.fairness_checked" in missing.json()["errors"]
    assert open_request(api, version, staging, justification="").status_code == 400
    assert open_request(api, version, staging, environment="nowhere").json()["errors"]["environment"]
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED)
    assert "only a ready" in open_request(api, version, staging).json()["errors"]["model_version"][0]
    assert open_request(api_as(people["viewer"]), version, staging).status_code == 403


def test_quorum_of_two_approvers_and_one_decision_each(people, approver2, version, production, api_as):
    request_id = open_request(api_as(people["scientist"]), version, production).json()["id"]
    first = decide(api_as(people["approver"]), request_id)
    assert first.status_code == 201 and first.json()["status"] == "pending" and first.json()["approvals"] == 1
    again = decide(api_as(people["approver"]), request_id)
    assert again.status_code == 400 and "already decided" in again.json()["errors"]["verdict"][0]
    assert decide(api_as(people["admin"]), request_id).status_code == 403, "production: approvers only"
    final = decide(api_as(approver2), request_id, comment="Evidence complete")
    assert final.json()["status"] == "approved" and final.json()["expires_at"]
    assert services.is_approved_for(version, production)
    assert [d["approver"] for d in final.json()["decisions"]] == ["approver", "approver2"]


def test_high_risk_needs_one_more_approval(people, approver2, version, production, api_as, project):
    from apps.accounts.models import Membership
    from tests.conftest import make_user

    version.model.risk_tier = "high"
    version.model.save()
    third = make_user("approver3")
    Membership.objects.create(user=third, project=project, role=Membership.Role.APPROVER)
    request_id = open_request(api_as(people["scientist"]), version, production).json()["id"]
    decide(api_as(people["approver"]), request_id)
    assert decide(api_as(approver2), request_id).json()["status"] == "pending"
    assert decide(api_as(third), request_id).json()["status"] == "approved"


def test_self_approval_is_refused_and_audited(people, version, staging, api_as):
    # The admin imported nothing but requests: admins may decide, yet not on their own request.
    request_id = open_request(api_as(people["admin"]), version, staging).json()["id"]
    refused = decide(api_as(people["admin"]), request_id)
    assert refused.status_code == 403 and "someone else must decide" in refused.json()["detail"]
    assert AuditEvent.objects.filter(action="approval.self_decision_refused", actor=people["admin"]).exists()
    # The version's creator cannot approve it either, whoever requested.
    ModelVersion.objects.filter(pk=version.pk).update(created_by=people["approver"])
    assert decide(api_as(people["approver"]), request_id).status_code == 403


def test_reject_needs_a_comment_and_ends_the_request(people, approver2, version, production, api_as):
    request_id = open_request(api_as(people["scientist"]), version, production).json()["id"]
    no_comment = decide(api_as(people["approver"]), request_id, verdict="reject", comment="")
    assert no_comment.status_code == 400 and no_comment.json()["errors"]["comment"]
    rejected = decide(api_as(people["approver"]), request_id, verdict="reject", comment="No fairness check")
    assert rejected.json()["status"] == "rejected" and rejected.json()["closed_reason"] == "No fairness check"
    late = decide(api_as(approver2), request_id)
    assert late.status_code == 400 and "rejected" in late.json()["errors"]["status"][0]


def test_request_changes_ends_it_too(people, version, staging, api_as):
    request_id = open_request(api_as(people["scientist"]), version, staging).json()["id"]
    body = decide(api_as(people["approver"]), request_id, verdict="request_changes", comment="Add a validation").json()
    assert body["status"] == "changes_requested"


def test_viewer_and_outsider_cannot_decide(people, version, staging, api_as):
    request_id = open_request(api_as(people["scientist"]), version, staging).json()["id"]
    assert decide(api_as(people["viewer"]), request_id).status_code == 403
    assert decide(api_as(people["outsider"]), request_id).status_code == 404
    assert api_as(people["outsider"]).get(f"/api/v1/approvals/{request_id}/").status_code == 404
    assert api_as(people["outsider"]).get("/api/v1/approvals/").json()["count"] == 0


def test_withdrawn_and_expired_requests_cannot_be_decided(people, version, staging, production, api_as):
    api = api_as(people["scientist"])
    withdrawn = open_request(api, version, staging).json()["id"]
    assert api.post(f"/api/v1/approvals/{withdrawn}/withdraw/", {"reason": "wrong version"},
                    format="json").json()["status"] == "withdrawn"
    assert decide(api_as(people["approver"]), withdrawn).json()["errors"]["status"]
    expired = open_request(api, version, production).json()["id"]
    ApprovalRequest.objects.filter(uuid=expired).update(expires_at=timezone.now() - dt.timedelta(minutes=1))
    response = decide(api_as(people["approver"]), expired)
    assert response.status_code == 400 and "expired" in response.json()["errors"]["status"][0]
    assert ApprovalRequest.objects.get(uuid=expired).status == "expired"


def test_an_artifact_change_voids_the_request_and_the_approval(people, version, staging, api_as):
    api = api_as(people["scientist"])
    first = open_request(api, version, staging).json()["id"]
    ModelVersion.objects.filter(pk=version.pk).update(artifact_sha256="c" * 64)
    response = decide(api_as(people["approver"]), first)
    assert response.status_code == 400 and "void" in response.json()["errors"]["status"][0]
    assert ApprovalRequest.objects.get(uuid=first).status == "void"
    version.refresh_from_db()
    second = open_request(api, version, staging).json()["id"]
    assert decide(api_as(people["approver"]), second).json()["status"] == "approved"
    assert services.is_approved_for(version, staging)
    ModelVersion.objects.filter(pk=version.pk).update(signature={"inputs": [{"name": "income", "type": "double"}]})
    version.refresh_from_db()
    assert not services.is_approved_for(version, staging), "the approval is bound to the signature too"


def test_approvals_expire_for_recertification(people, version, production, approver2, api_as):
    request_id = open_request(api_as(people["scientist"]), version, production).json()["id"]
    decide(api_as(people["approver"]), request_id)
    decide(api_as(approver2), request_id)
    assert services.is_approved_for(version, production)
    assert services.expire_due(now=timezone.now() + dt.timedelta(days=31)) == 1
    assert ApprovalRequest.objects.get(uuid=request_id).status == "expired"
    assert not services.is_approved_for(version, production)


def test_reauthentication_when_the_policy_asks(people, version, staging, api_as):
    from tests.conftest import PASSWORD

    services.update_environment(staging, actor=people["admin"], reauth_required=True)
    request_id = open_request(api_as(people["scientist"]), version, staging).json()["id"]
    wrong = decide(api_as(people["approver"]), request_id, password="nope")
    assert wrong.status_code == 400 and wrong.json()["errors"]["password"]
    assert decide(api_as(people["approver"]), request_id, password=PASSWORD).json()["status"] == "approved"


def test_waiting_for_me_lists_what_i_can_decide(people, version, staging, api_as):
    open_request(api_as(people["scientist"]), version, staging)
    mine = api_as(people["approver"]).get("/api/v1/approvals/?waiting_for_me=1").json()
    assert mine["count"] == 1
    assert api_as(people["scientist"]).get("/api/v1/approvals/?waiting_for_me=1").json()["count"] == 0
    assert api_as(people["viewer"]).get("/api/v1/approvals/?status=bogus").status_code == 400


def test_final_approval_sends_the_signal_once(people, version, staging, api_as, django_capture_on_commit_callbacks):
    received = []
    approval_granted.connect(lambda sender, request, **_: received.append(request.uuid), weak=False,
                             dispatch_uid="test-signal")
    try:
        request_id = open_request(api_as(people["scientist"]), version, staging).json()["id"]
        with django_capture_on_commit_callbacks(execute=True):
            decide(api_as(people["approver"]), request_id)
        assert [str(u) for u in received] == [request_id]
    finally:
        approval_granted.disconnect(dispatch_uid="test-signal")


@pytest.mark.django_db(transaction=True)
def test_two_racing_final_approvals_cannot_both_finalise(people, approver2, version, staging):
    request = services.request_approval(version, staging, actor=people["scientist"], justification="go",
                                        answers=ANSWERS)
    barrier, outcomes = threading.Barrier(2), []

    def racer(user):
        try:
            barrier.wait()
            services.decide(ApprovalRequest.objects.get(pk=request.pk), actor=user, verdict="approve")
            outcomes.append("decided")
        except Exception as exc:  # the loser: refused because the request is no longer pending
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=racer, args=(u,)) for u in (people["approver"], approver2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    request.refresh_from_db()
    assert request.status == "approved"
    assert sorted(outcomes) == ["ValidationError", "decided"], outcomes
    assert Decision.objects.filter(request=request).count() == 1
    assert AuditEvent.objects.filter(action="approval.approved").count() == 1


def test_waiting_for_me_costs_the_same_few_queries_however_many_requests_wait(people, version, staging,
                                                                             django_assert_max_num_queries):
    for number in range(2, 8):
        other = ModelVersion.objects.get(pk=version.pk)
        other.pk, other.uuid, other.number = None, uuid.uuid4(), number
        other.save()
        services.request_approval(other, staging, actor=people["scientist"], justification="go", answers=ANSWERS)
    approver = type(people["approver"]).objects.get(pk=people["approver"].pk)  # no cached roles
    with django_assert_max_num_queries(4):
        waiting = services.waiting_for(approver)
    assert len(waiting) == 6


def test_someone_whose_roles_decide_nowhere_waits_for_nothing_in_one_query(people, version, staging,
                                                                         django_assert_num_queries):
    services.request_approval(version, staging, actor=people["scientist"], justification="go", answers=ANSWERS)
    for name in ("viewer", "scientist"):
        person = type(people[name]).objects.get(pk=people[name].pk)  # no cached roles
        with django_assert_num_queries(1):  # their memberships, which every permission check reuses
            assert services.waiting_for(person) == []
    approver = type(people["approver"]).objects.get(pk=people["approver"].pk)
    assert [r.model_version for r in services.waiting_for(approver)] == [version]
    assert services.waiting_for(people["outsider"]) == []  # an admin elsewhere: asked, and nothing here
