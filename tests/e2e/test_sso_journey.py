"""Browser journey through single sign-on: a real OpenID Connect provider (oidc-provider-mock) runs on loopback
next to the live server; the person clicks "Sign in with …", fills the provider's form, and comes back signed
in with the project role their group maps to. Every portal page is checked with axe-core (conftest.py); the
provider's own page is not ours to check."""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import expect

from apps.accounts import sso_services
from apps.accounts.models import Membership, User
from apps.approvals.models import Environment
from apps.deployments.models import Deployment
from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.e2e

HOME = re.compile(r"^http://[^/]+/$")


@pytest.fixture
def sso_on(sso_on, settings):
    settings.PORTAL_LOCAL_LOGIN = "admins"  # the journey's break-glass staff member still signs in with a password
    return sso_on


def leave_unchecked(portal) -> None:
    """The identity provider's page belongs to another site: mark it seen without holding it to our standard."""
    portal.checked_up_to = len(portal.navigations)


def _model_in_service(people, project) -> None:
    """A model version serving in staging with part of its readiness done (owner, intended use), as rows only."""
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"],
                                           owner=people["scientist"], intended_use="Prioritise retention calls")
    version = ModelVersion.objects.create(model=model, number=1, status=ModelVersion.Status.READY, format="skops",
                                          created_by=people["scientist"], sha256="a" * 64, artifact_sha256="b" * 64,
                                          signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []})
    staging = Environment.objects.create(project=project, name="Staging", slug="staging", required_approvals=0)
    Deployment.objects.create(project=project, name="Churn staging", slug="churn-staging", environment=staging,
                              champion=version)


def test_an_approver_signs_in_through_the_identity_provider_and_sees_their_project(portal, people, project,
                                                                                   sso_on, screenshot_dir):
    """The issue's "done when": SSO as a person whose group maps to approver, then their tour and the checklist."""
    _model_in_service(people, project)
    sso_services.create_group_mapping(actor=people["staff"], group="ds-alpha-approvers", project=project,
                                      role="approver")
    claims = {"preferred_username": "amira", "email": "amira@agency.example", "given_name": "Amira",
              "family_name": "Haddad", "groups": ["ds-alpha-approvers", "all-staff"]}
    assert requests.put(f"{sso_on}/users/amira-sub", json=claims, timeout=5).status_code == 204
    page = portal.page

    portal.visit("/accounts/login/")
    expect(page.get_by_role("heading", level=2)).to_have_text("Administrator sign-in (emergency access)")
    page.screenshot(path=str(screenshot_dir / "login-sso.png"), full_page=True)
    with page.expect_navigation(url=re.compile(re.escape(sso_on) + r"/oauth2/authorize")):
        page.get_by_role("link", name="Sign in with Agency ID").click()
    leave_unchecked(portal)

    page.locator("input[name=sub]").fill("amira-sub")
    portal.click_to_page(page.get_by_role("button", name="Authorize"))

    expect(page).to_have_url(HOME)
    expect(page.get_by_role("heading", level=1)).to_have_text("Model Operations Center")
    amira = User.objects.get(username="amira")
    assert Membership.objects.get(user=amira, project=project).role == "approver"

    # First visit: the approver's tour, and the model in service with its readiness on its card.
    tour = page.locator("#tour")
    expect(tour).to_have_attribute("data-tour-role", "approver")
    expect(tour).to_contain_text("A short tour for approvers")
    expect(tour).to_contain_text("Requests waiting for you")
    on_card = page.locator("[data-readiness]").first
    expect(on_card.locator("[data-readiness-count]").first).to_have_text(re.compile(r"Readiness: \d of 8 ready"))

    portal.visit("/models/churn/v1/")
    checklist = page.locator("#readiness")
    expect(checklist.locator('[data-readiness-item="owner"]')).to_have_attribute("data-done", "true")
    missing = checklist.locator('[data-readiness-item="explainability"]')
    expect(missing).to_have_attribute("data-done", "false")
    # An approver cannot compute feature importance: the checklist says who can instead of linking.
    expect(missing).to_contain_text("Only a data scientist or admin of the project can do this.")
    expect(missing.locator("[data-readiness-fix]")).to_have_count(0)

    portal.visit("/projects/")
    portal.click_to_page(page.get_by_role("link", name="Alpha", exact=True))
    expect(page.get_by_role("heading", level=1)).to_have_text("Alpha")
    expect(page.get_by_text("Your role:")).to_contain_text("Approver")


def test_a_deactivated_person_is_told_so_after_the_provider(portal, people, sso_on):
    people["viewer"].is_active = False
    people["viewer"].save()
    assert requests.put(f"{sso_on}/users/viewer", json={"preferred_username": "viewer"}, timeout=5).status_code == 204
    page = portal.page

    portal.visit("/accounts/login/")
    with page.expect_navigation(url=re.compile(re.escape(sso_on))):
        page.get_by_role("link", name="Sign in with Agency ID").click()
    leave_unchecked(portal)
    page.locator("input[name=sub]").fill("viewer")
    portal.click_to_page(page.get_by_role("button", name="Authorize"))

    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in did not work")
    expect(page.get_by_text("Your portal account is deactivated")).to_be_visible()


def test_a_break_glass_admin_maps_a_group_on_the_staff_page(portal, people, sso_on):
    page = portal.page
    portal.log_in("staffer")  # PORTAL_LOCAL_LOGIN=admins: staff may still use a password
    expect(page).to_have_url(HOME)

    portal.visit("/projects/")
    portal.click_to_page(page.get_by_role("link", name="Single sign-on groups"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Single sign-on groups")
    portal.click_to_page(page.get_by_role("button", name="Add mapping"))
    expect(page.locator("#id_group_error")).to_have_text("This field is required.")

    page.get_by_label("Group name").fill("ds-alpha-approvers")
    page.get_by_label("Project").select_option("alpha")
    page.get_by_label("Role").select_option("approver")
    portal.click_to_page(page.get_by_role("button", name="Add mapping"))
    row = page.locator("tbody tr").filter(has_text="ds-alpha-approvers")
    expect(row).to_contain_text("Alpha")
    expect(row).to_contain_text("Approver")
