"""Browser journey for guidance (issue 8): a data scientist steps through their first-run tour with the keyboard,
dismisses it and it stays gone; the readiness checklist on a model card links to the page that fixes a missing
item. Every page is checked with axe-core.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.guidance.models import TourProgress
from apps.registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.e2e


def _focused_id(page) -> str:
    return page.evaluate("() => document.activeElement && document.activeElement.id")


def test_scientist_tour_and_readiness_journey(portal, people, project):
    page = portal.page
    portal.log_in("scientist")
    portal.visit("/")
    tour = page.locator("#tour")
    expect(tour).to_have_attribute("data-tour-role", "scientist")
    steps = tour.locator("[data-tour-step]")
    count = steps.count()
    assert 3 <= count <= 5
    expect(steps.nth(0)).to_be_visible()
    expect(steps.nth(1)).to_be_hidden()

    # Next with the keyboard until the last tip; the button goes away there, so focus moves to the tip itself.
    next_tip = tour.get_by_role("button", name="Next tip")
    next_tip.focus()
    for n in range(2, count + 1):
        page.keyboard.press("Enter")
        expect(tour.locator("[data-tour-position]")).to_have_text(f"Tip {n} of {count}")
        expect(steps.nth(n - 1)).to_be_visible()
    expect(next_tip).to_be_hidden()
    assert _focused_id(page) == f"tour-step-{count}"
    tour.get_by_role("button", name="Previous tip").focus()
    page.keyboard.press("Space")
    expect(steps.nth(count - 2)).to_be_visible()
    portal.check_a11y()

    # Escape hides it for this visit only; it comes back in a new session until dismissed.
    page.keyboard.press("Escape")
    expect(tour).to_be_hidden()
    assert _focused_id(page) == "main"
    page.evaluate("() => window.sessionStorage.clear()")
    portal.visit("/")
    expect(page.locator("#tour")).to_be_visible()

    # Dismiss for good (through the API, no page load) and it stays gone.
    page.locator("#tour").get_by_role("button", name="Dismiss the tour").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#tour")).to_be_hidden()
    expect(page.locator("#tour")).to_have_attribute("data-tour-dismissed", "true")
    assert TourProgress.objects.get(user=people["scientist"], role="scientist").dismissed_at is not None
    page.evaluate("() => window.sessionStorage.clear()")
    portal.visit("/")
    expect(page.locator("#tour")).to_have_count(0)
    portal.visit("/help/")
    expect(page.locator("#tour")).to_have_count(0)
    expect(page.locator("[data-help-checklist]").first).to_have_attribute("data-help-checklist", "scientist")

    # The readiness checklist on a card: a missing approval links to the request form.
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"],
                                           owner=people["scientist"], intended_use="Prioritise retention calls")
    ModelVersion.objects.create(model=model, number=1, status=ModelVersion.Status.READY, format="skops",
                                created_by=people["scientist"], sha256="a" * 64, artifact_sha256="b" * 64,
                                signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []})
    portal.visit("/models/churn/v1/")
    checklist = page.locator("[data-readiness]")
    expect(checklist.locator("[data-readiness-count]")).to_have_text("2 of 8 ready")
    expect(checklist.locator('[data-readiness-item="owner"]')).to_have_attribute("data-done", "true")
    approval = checklist.locator('[data-readiness-item="approval"]')
    expect(approval).to_have_attribute("data-done", "false")
    portal.click_to_page(approval.get_by_role("link", name="Ask for sign-off"))
    expect(page).to_have_url(re.compile(r"/models/churn/v1/request-approval/$"))
