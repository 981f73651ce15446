"""Browser journey through single sign-on: a real OpenID Connect provider (oidc-provider-mock) runs on loopback
next to the live server; the person clicks "Sign in with …", fills the provider's form, and comes back signed
in with the project role their group maps to. Every portal page is checked with axe-core (conftest.py); the
provider's own page is not ours to check."""

from __future__ import annotations

import re

import pytest
import requests
from oidc_provider_mock import run_server_in_thread
from playwright.sync_api import expect

from apps.accounts import sso, sso_services
from apps.accounts.models import Membership, User

pytestmark = pytest.mark.e2e

HOME = re.compile(r"^http://[^/]+/$")


@pytest.fixture(scope="module")
def provider():
    with run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture
def sso_on(settings, provider):
    settings.OIDC_ISSUER = provider
    settings.OIDC_RP_CLIENT_ID = "portal"
    settings.OIDC_RP_CLIENT_SECRET = "portal-secret"
    settings.OIDC_PROVIDER_NAME = "Agency ID"
    settings.PORTAL_LOCAL_LOGIN = "admins"
    sso.forget_provider_config()
    yield provider
    sso.forget_provider_config()


def leave_unchecked(portal) -> None:
    """The identity provider's page belongs to another site: mark it seen without holding it to our standard."""
    portal.checked_up_to = len(portal.navigations)


def test_an_approver_signs_in_through_the_identity_provider_and_sees_their_project(portal, people, project,
                                                                                   sso_on, screenshot_dir):
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
