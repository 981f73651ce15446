"""Browser journey for monitoring (issue 7, "Done when"): the demo data as `make demo` loads it, then
`make demo-traffic`'s week (drift from day three, outcomes a day late). The Operations Center shows the demo deployment
amber; the monitoring page names the drifted feature in words and charts; the alert explains what happened, why it
matters and what to do; the retraining it started registered a challenger that waits for approval, and the
approver finds it in the queue with the comparison as evidence. Every page is checked with axe-core.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.monitoring.models import Alert, RetrainingRun
from tests.e2e.conftest import DEMO_PASSWORD
from tests.e2e.test_approvals_journey import _sign_out

pytestmark = pytest.mark.e2e

SLUG = "churn-risk-staging"


def test_a_drifting_week_turns_the_operations_center_amber_and_ends_in_a_challenger_awaiting_approval(
        portal, demo_week, screenshot_dir):
    assert "Retraining registered Churn risk v2" in demo_week, demo_week
    page = portal.page
    alert = Alert.objects.get(rule__metric="drift_psi")
    run = RetrainingRun.objects.get()

    # A stakeholder's home page: the deployment is amber, with the alert counted.
    portal.log_in("viewer", DEMO_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Model Operations Center")
    card = page.locator(f'[data-deployment="{SLUG}"]')
    expect(card).to_have_attribute("data-health", "amber")
    expect(card.locator("[data-open-alerts]")).to_have_text("1")
    expect(card.locator("svg")).to_be_visible()  # the 14-day sparkline
    page.screenshot(path=str(screenshot_dir / "operations-center.png"), full_page=True)

    # Its monitoring page says in words what moved, and draws it.
    portal.click_to_page(card.get_by_role("link", name="Churn risk (staging)"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Churn risk (staging)")
    expect(page.locator("#open-alerts")).to_have_text("1 open alert")
    drift = page.locator("#drift")
    expect(drift).to_contain_text(re.compile(r"tenure_months.{0,40}(PSI 0\.\d\d, high|high)"))
    expect(drift.locator(".plotly-chart .main-svg").first).to_be_visible()
    expect(page.locator("#performance")).to_contain_text("Accuracy")
    expect(page.locator("#summary [data-summary=requests]")).not_to_have_text("0")
    page.screenshot(path=str(screenshot_dir / "monitoring-page.png"), full_page=True)

    # The alert explains itself and points at the retraining it started.
    portal.visit(f"/alerts/{alert.uuid}/")
    expect(page.locator("#what-happened")).to_contain_text("tenure_months")
    expect(page.locator("#what-happened")).to_contain_text("PSI")
    expect(page.locator("#why-it-matters")).to_contain_text("differs from the data it learned from")
    expect(page.locator("#what-to-do")).to_contain_text("retrain")
    expect(page.locator("#respond-note")).to_be_visible()  # a viewer may not acknowledge
    page.screenshot(path=str(screenshot_dir / "drift-alert.png"), full_page=True)

    portal.visit(f"/deployments/{SLUG}/retraining/")
    run_card = page.locator(f"#retraining-run-{run.uuid}")
    expect(run_card).to_have_attribute("data-status", "succeeded")
    expect(run_card).to_contain_text("more accurate")
    expect(run_card.get_by_role("link", name=re.compile("Churn risk v2"))).to_be_visible()
    _sign_out(portal, "viewer")

    # The approver finds the challenger waiting, with the comparison as its justification.
    portal.log_in("approver1", DEMO_PASSWORD)
    portal.visit("/approvals/")
    row = page.locator(f'[data-request="{run.approval.uuid}"]')
    expect(row).to_contain_text("Churn risk v2")
    portal.click_to_page(row.get_by_role("link").first)
    expect(page.locator("body")).to_contain_text("Retraining run")
    expect(page.locator("body")).to_contain_text("more accurate than v1")
    page.screenshot(path=str(screenshot_dir / "retrained-challenger-approval.png"), full_page=True)

    # The scientist acknowledges the alert; the Operations Center still shows it until the drift is gone.
    _sign_out(portal, "approver1")
    portal.log_in("scientist", DEMO_PASSWORD)
    portal.visit(f"/alerts/{alert.uuid}/")
    portal.click_to_page(page.locator("#acknowledge-form").get_by_role("button"))
    expect(page.locator("#alert-status")).to_contain_text("Acknowledged")
    portal.visit("/")
    expect(page.locator(f'[data-deployment="{SLUG}"]')).to_have_attribute("data-health", "amber")
