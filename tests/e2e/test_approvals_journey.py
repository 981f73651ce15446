"""Browser journey for approvals (issue 5, "Tests"): `scientist` requests approval of a ready version for
`production` (two approvals from approvers) from the model card, `approver1` and `approver2` each approve with a
comment, and the requester sees "Approved" on the card and in "My requests". Every page is checked with axe-core.

The version is created as rows (as tests/approvals/conftest.py does): the card only loads a model to predict,
which this journey never does.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.accounts.models import Membership
from apps.approvals import services
from apps.approvals.models import ApprovalRequest
from apps.registry.models import ModelVersion, RegisteredModel
from tests.conftest import make_user

pytestmark = pytest.mark.e2e


def field(page, label: str):
    """A form field by the start of its label (required fields' labels end with a marker)."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}(\s|\*|$)"))


def _sign_out(portal, username: str) -> None:
    portal.page.get_by_role("button", name=username).click()
    portal.click_to_page(portal.page.get_by_role("button", name="Sign out"))


def _approve(portal, username: str, comment: str) -> None:
    page = portal.page
    portal.log_in(username)
    expect(page.locator("[data-approvals-waiting]")).to_contain_text("1")
    portal.click_to_page(page.get_by_role("link", name=re.compile(r"^Approvals")))
    expect(page.locator("[data-tab=waiting][aria-current=page]")).to_be_visible()
    portal.click_to_page(page.get_by_role("link", name="Churn v1"))
    expect(page.locator("#checklist [data-check=training_data]")).to_contain_text("Link the dataset version")
    page.get_by_label("Approve", exact=True).check()
    field(page, "Comment").fill(comment)
    portal.click_to_page(page.get_by_role("button", name="Record my decision"))
    expect(page.get_by_role("status").filter(has_text="Your decision (approve) is recorded")).to_be_visible()
    expect(page.locator(f"#decisions [data-approver={username}]")).to_contain_text(comment)
    _sign_out(portal, username)


def test_request_and_two_approvals_journey(portal, people, project):
    page = portal.page
    approver2 = make_user("approver2")
    Membership.objects.create(user=approver2, project=project, role=Membership.Role.APPROVER)
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"],
                                           owner=people["scientist"], intended_use="Prioritise retention calls",
                                           risk_tier="medium")
    ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="skops", created_by=people["scientist"],
        sha256="a" * 64, artifact_sha256="b" * 64, mlflow_model_uri="models:/portal.churn/1",
        signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []}, metrics={"accuracy": 0.9})
    services.create_environment(project, actor=people["admin"], name="production", required_approvals=2,
                                approver_roles=["approver"], approval_valid_days=90)

    # The scientist asks for approval from the card.
    portal.log_in("scientist")
    portal.visit("/models/churn/v1/")
    row = page.locator("#card-approvals [data-environment=production]")
    expect(row).to_contain_text("Not approved")
    portal.click_to_page(page.get_by_role("link", name="Request approval"))
    expect(page.locator("#policy")).to_contain_text("2 approvals from approvers")
    expect(page.locator("#preview-checklist [data-check=training_data]")).to_have_attribute("data-ok", "no")
    portal.click_to_page(page.get_by_role("button", name="Request approval"))  # empty: errors by the fields
    expect(page.locator("#id_justification_error")).to_contain_text("required")
    field(page, "Justification").fill("Recall is 12 points better than the rules on last quarter's churners.")
    field(page, "What will the model be used for, and by whom?").fill("Ordering the retention team's calls.")
    field(page, "Who is affected by its outputs, and how?").fill("Customers: who gets called first.")
    page.get_by_role("group", name=re.compile("Has performance been checked")).get_by_label("Yes").check()
    field(page, "What happens if the model is switched off or wrong?").fill("Agents call in the old order.")
    portal.click_to_page(page.get_by_role("button", name="Request approval"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Waiting for decisions")
    expect(page.locator("[data-approvals]")).to_have_text("0 of 2 needed")
    expect(page.locator("#why-not")).to_contain_text("cannot decide")
    _sign_out(portal, "scientist")

    _approve(portal, "approver", "Evidence is sufficient; validation on Q3 data would be good next time.")
    _approve(portal, "approver2", "Agreed. Fallback plan is clear.")
    assert ApprovalRequest.objects.get().status == ApprovalRequest.Status.APPROVED

    # The requester sees the outcome on the card and in "My requests".
    portal.log_in("scientist")
    portal.visit("/models/churn/v1/")
    expect(row.locator("[data-approval-state]")).to_contain_text("Approved")
    portal.click_to_page(page.get_by_role("link", name=re.compile(r"^Approvals")))
    expect(page.locator("[data-tab=mine][aria-current=page]")).to_be_visible()
    expect(page.locator("#approvals-table tbody tr")).to_have_count(1)
    expect(page.locator("#approvals-table [data-status=approved]")).to_have_text("Approved")
    portal.click_to_page(page.get_by_role("link", name="Churn v1"))
    expect(page.locator("#decisions li")).to_have_count(2)

    # The audit packet an auditor would read lists both decisions, their comments and the intact chain.
    portal.visit("/models/churn/v1/audit-packet/?inline=1")
    packet = page.locator("body")
    for name, comment in (("approver", "Evidence is sufficient"), ("approver2", "Fallback plan is clear")):
        expect(packet).to_contain_text(name)
        expect(packet).to_contain_text(comment)
    portal.visit("/")  # the packet is a standalone document: back to a page with the header
    _sign_out(portal, "scientist")


def test_admin_edits_an_environment_policy(portal, people, project):
    page = portal.page
    services.create_environment(project, actor=people["admin"], name="staging", required_approvals=1)
    portal.log_in("admin")
    portal.visit("/projects/alpha/environments/")
    portal.click_to_page(page.get_by_role("link", name="Edit staging"))
    field(page, "Approvals needed").fill("2")
    page.get_by_label("Approvers re-enter their password to decide").check()
    field(page, "Risk questionnaire").fill("What is it for?\nyes/no: Fairness checked?")
    portal.click_to_page(page.get_by_role("button", name="Save the policy"))
    expect(page.locator("#env-staging")).to_contain_text("2 approvals")
    expect(page.locator("#env-staging")).to_contain_text("approvers sign off with their password")
    portal.click_to_page(page.get_by_role("link", name="New environment"))
    portal.click_to_page(page.get_by_role("button", name="Create the environment"))  # no name: an error
    expect(page.locator("#id_name_error")).to_be_visible()
