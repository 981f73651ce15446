"""Browser journeys through sign-in, navigation by role, access management and the audit trail.

Each test signs in through the real login form on the live server, as a person would, and every page it
lands on is checked against WCAG 2.1 AA with axe-core (see conftest.py).
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.accounts.models import Membership
from tests.conftest import make_user

pytestmark = pytest.mark.e2e

HOME = re.compile(r"^http://[^/]+/$")


def main_nav(portal):
    return portal.page.get_by_role("navigation", name="Main")


def audit_row(portal, action: str, actor: str):
    """Rows of the audit table whose Action cell is exactly `action` and Actor cell exactly `actor`."""
    return (portal.page.locator("#audit-table tbody tr")
            .filter(has=portal.page.locator("td:nth-child(3)", has_text=re.compile(rf"^{re.escape(actor)}$")))
            .filter(has=portal.page.locator("td:nth-child(4) code", has_text=re.compile(rf"^{re.escape(action)}$"))))


def test_viewer_sees_member_navigation_only_and_is_refused_access_management(portal, people):
    portal.log_in("viewer")

    expect(portal.page).to_have_url(HOME)
    expect(portal.page.get_by_role("heading", level=1)).to_have_text("Model Operations Center")
    nav = main_nav(portal)
    for item in ("Home", "Projects", "My jobs"):
        expect(nav.get_by_role("link", name=item, exact=True)).to_be_visible()
    for item in ("Access", "Audit", "Site admin"):
        expect(nav.get_by_role("link", name=item, exact=True)).to_have_count(0)
    for data_nav in ("access", "audit", "admin"):
        expect(nav.locator(f"[data-nav={data_nav}]")).to_have_count(0)

    portal.visit("/projects/alpha/members/", status=403)
    expect(portal.page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(portal.page.locator("#members-table")).to_have_count(0)


def test_project_admin_adds_a_member_changes_their_role_and_finds_both_in_the_audit_trail(
        portal, people, screenshot_dir):
    make_user("newcomer")  # exists, but not yet in any project
    page = portal.page

    portal.log_in("admin")
    expect(page).to_have_url(HOME)
    expect(page.get_by_role("heading", level=1)).to_have_text("Model Operations Center")
    page.screenshot(path=str(screenshot_dir / "home-admin.png"), full_page=True)
    nav = main_nav(portal)
    expect(nav.locator("[data-nav=access]")).to_have_text("Access")
    expect(nav.locator("[data-nav=audit]")).to_have_text("Audit")
    expect(nav.locator("[data-nav=admin]")).to_have_count(0)  # a project admin is not site staff

    portal.click_to_page(nav.get_by_role("link", name="Access", exact=True))
    expect(page).to_have_url(re.compile(r"/projects/alpha/members/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Members of Alpha")
    expect(page.locator("[data-member=newcomer]")).to_have_count(0)

    add_form = page.get_by_role("region", name="Add a member")
    add_form.get_by_label("Username or e-mail").fill("newcomer")
    add_form.get_by_label("Role").select_option(label="Scientist")
    portal.click_to_page(add_form.get_by_role("button", name="Add member"))
    expect(page.get_by_role("status").filter(has_text="newcomer added as Scientist.")).to_be_visible()
    row = page.locator("#members-table tr[data-member=newcomer]")
    expect(row).to_be_visible()
    expect(row.get_by_label("Role of newcomer")).to_have_value("scientist")

    row.get_by_label("Role of newcomer").select_option(label="Approver")
    portal.click_to_page(row.get_by_role("button", name="Change role of newcomer"))
    expect(page.get_by_role("status").filter(has_text="newcomer is now Approver.")).to_be_visible()
    expect(page.locator("#members-table tr[data-member=newcomer]").get_by_label("Role of newcomer")) \
        .to_have_value("approver")
    assert Membership.objects.get(project__slug="alpha", user__username="newcomer").role == "approver"

    portal.click_to_page(main_nav(portal).get_by_role("link", name="Audit", exact=True))
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit trail")
    expect(audit_row(portal, "membership.add", "admin")).to_have_count(1)
    expect(audit_row(portal, "membership.add", "admin")).to_contain_text("newcomer")
    expect(audit_row(portal, "membership.change_role", "admin")).to_have_count(1)
    expect(audit_row(portal, "auth.login", "admin")).to_have_count(1)


def test_wrong_password_shows_the_error_on_the_login_page_without_redirecting(portal, people):
    page = portal.page
    portal.visit("/accounts/login/")
    page.get_by_label("Username").fill("viewer")
    page.get_by_label("Password").fill("not-the-password")
    response = portal.click_to_page(page.get_by_role("button", name="Sign in"))

    assert response.status == 200
    assert response.request.redirected_from is None
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_role("alert")).to_contain_text("That username and password do not match")
    expect(main_nav(portal).get_by_role("link", name="Home")).to_have_count(0)  # still signed out


@pytest.mark.parametrize(("username", "sections", "nav_items"), [
    ("approver", {"approvals", "recertification", "projects", "jobs"}, {"Audit"}),
    ("scientist", {"recertification", "projects", "jobs"}, set()),
])
def test_each_role_lands_on_its_own_home_page(portal, people, username, sections, nav_items):
    portal.log_in(username)
    shown = set(portal.page.locator("[data-section]").evaluate_all("els => els.map(e => e.dataset.section)"))
    assert shown == sections
    nav = main_nav(portal)
    for item in ("Access", "Audit", "Site admin"):
        expect(nav.get_by_role("link", name=item, exact=True)).to_have_count(1 if item in nav_items else 0)


def test_every_page_a_staff_member_can_reach_passes_the_accessibility_check(portal, people):
    """Walk each page template at least once (with content in it), so axe checks them all."""
    page = portal.page
    portal.log_in("staffer")
    for path in ("/projects/", "/projects/alpha/", "/projects/new/", "/projects/alpha/members/",
                 "/projects/alpha/members/viewer/remove/", "/users/scientist/deactivate/?next=/",
                 "/jobs/", "/accounts/password/change/"):
        portal.visit(path)
    portal.visit("/audit/?verify=1")
    expect(page.locator("#chain-status")).to_contain_text("Chain intact")

    portal.visit("/account/tokens/")
    page.get_by_label("Name").fill("nightly scoring")
    portal.click_to_page(page.get_by_role("button", name="Create token"))
    expect(page.get_by_label("New API key")).to_have_value(re.compile(r"^pt_"))

    portal.visit("/projects/nope/", status=404)
    page.get_by_role("button", name="staffer").click()
    portal.click_to_page(page.get_by_role("button", name="Sign out"))
    portal.visit("/accounts/password/reset/")
    page.get_by_label("Email").fill("viewer@example.org")
    portal.click_to_page(page.get_by_role("button", name="Send the link"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your e-mail")
