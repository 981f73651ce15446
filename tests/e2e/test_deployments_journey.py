"""Browser journey for deployments (issue 6, "Done when"): two real skops versions approved for the gated
`production` environment (set up through services); `scientist` deploys v1 from its model card, creates a
deployment token, runs the page's own curl snippet with it and uses Try it; deploys v2 into the same deployment
(v1 becomes the fallback); `admin` rolls back with a reason and the history shows it; `viewer` sees the page
(snippets, Try it, the live chart once the log is drained) without the change forms. Every page is checked with
axe-core.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from playwright.sync_api import expect

from apps.approvals import services as approvals
from apps.deployments import predlog, serving
from apps.deployments.models import Deployment
from tests.deployments.conftest import FEATURES, approve, import_skops, training_frame
from tests.e2e.test_approvals_journey import _sign_out, field
from tests.registry.test_evidence import profiled_training_data

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def _fresh_serving(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"  # this test's own prediction spool
    settings.REDIS_URL = ""  # the prediction log spools to files; the test drains it itself
    serving.forget_all()
    predlog._redis = None
    yield
    serving.forget_all()


@pytest.fixture
def approved_versions(jobs_stay_in_process, people, project, django_capture_on_commit_callbacks):
    from sklearn.tree import DecisionTreeClassifier

    capture = django_capture_on_commit_callbacks
    production = approvals.create_environment(project, actor=people["admin"], name="production",
                                              required_approvals=1, approver_roles=["approver"])
    training = profiled_training_data(project, people["scientist"], capture)
    first = import_skops(project, people["scientist"], capture, training=training)
    frame = training_frame(seed=5)
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(frame[FEATURES], frame["churned"])
    second = import_skops(project, people["scientist"], capture, model=stump, training=training)
    for version in (first, second):
        approve(version, production, people)
    return first, second


def _deploy_from_card(portal, number: int) -> None:
    page = portal.page
    portal.visit(f"/models/churn/v{number}/")
    portal.click_to_page(page.locator("#deployments").get_by_role("link", name="Deploy", exact=True))
    expect(page.locator('#environments [data-environment="production"]')).to_have_attribute("data-may-serve", "yes")
    expect(page.get_by_label("production", exact=True)).to_be_checked()


def test_deploy_call_promote_and_roll_back_journey(portal, people, project, approved_versions):
    page = portal.page
    page.on("dialog", lambda dialog: dialog.accept())  # the rollback's confirmation

    # The scientist deploys v1 from its card: production is approved, the name is prefilled.
    portal.log_in("scientist")
    _deploy_from_card(portal, 1)
    expect(field(page, "Name of the new deployment")).to_have_value("Churn (production)")
    portal.click_to_page(page.get_by_role("button", name="Deploy", exact=True))
    expect(page.get_by_role("heading", level=1)).to_have_text("Churn (production)")
    expect(page.locator('#roles-table [data-role="champion"]')).to_contain_text("Churn v1")
    expect(page.locator('#roles-table [data-role="champion"]')).to_contain_text("Approved for production")
    expect(page.locator("#no-fallback")).to_be_visible()
    expect(page.locator("#live-empty")).to_contain_text("No calls yet")
    deployment = Deployment.objects.get()
    url = f"{portal.page.url.split('/deployments/')[0]}/api/v1/deployments/{deployment.slug}/invocations"
    expect(page.locator("#invocations-url")).to_have_text(url)

    # A deployment token, shown once; the page's own curl snippet works with it.
    field(page, "Token name").fill("retention-app")
    portal.click_to_page(page.get_by_role("button", name="Create a token"))
    key = page.locator("#new-token-key").input_value()
    assert key.startswith("pd_")
    expect(page.locator('#tokens-table [data-token="retention-app"] [data-token-status]')).to_have_text("Active")
    snippet = page.locator("#snippet-curl").inner_text()
    assert url in snippet and "$PORTAL_TOKEN" in snippet
    done = subprocess.run(["bash", "-c", snippet], env={**os.environ, "PORTAL_TOKEN": key}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)["predictions"]
    assert len(predictions) == 1 and predictions[0] in (0, 1)

    # Try it: the browser posts the prefilled body with the session and CSRF header.
    page.get_by_role("button", name="Send").click()
    result = page.locator("#try-result")
    expect(result.locator("[data-try-status]")).to_contain_text("200")
    expect(result.locator("[data-try-request-id]")).to_have_text(re.compile(r"^[0-9a-f]{32}$"))
    expect(result.locator("[data-try-body]")).to_contain_text('"predictions"')
    page.get_by_label("Request body (JSON)").fill('{"dataframe_split": {"columns": ["age"], "data": [[1]]}}')
    page.get_by_role("button", name="Send").click()
    expect(result.locator("[data-try-status]")).to_contain_text("400")
    expect(result.locator("[data-try-body]")).to_contain_text("income")
    portal.check_a11y()

    # v2 goes into the same deployment: v1 becomes the fallback.
    _deploy_from_card(portal, 2)
    expect(field(page, "Deploy to")).to_have_value(deployment.slug)
    field(page, "Why").fill("Simpler model, same recall on Q3")
    portal.click_to_page(page.get_by_role("button", name="Deploy", exact=True))
    expect(page.get_by_role("status").filter(has_text="Churn v2 is now the champion")).to_be_visible()
    expect(page.locator('#roles-table [data-role="champion"]')).to_contain_text("Churn v2")
    expect(page.locator('#roles-table [data-role="fallback"]')).to_contain_text("Churn v1")
    _sign_out(portal, "scientist")

    # The admin rolls back, with a reason; the history shows who and why.
    portal.log_in("admin")
    portal.visit(f"/deployments/{deployment.slug}/")
    portal.click_to_page(page.get_by_role("button", name="Roll back to Churn v1"))  # no reason: refused
    expect(page.locator("#id_rollback-reason_error")).to_contain_text("Say why you roll back")
    field(page, "Why roll back").fill("v2 misses churners in the new region")
    portal.click_to_page(page.get_by_role("button", name="Roll back to Churn v1"))
    expect(page.get_by_role("status").filter(has_text="Rolled back")).to_be_visible()
    expect(page.locator('#roles-table [data-role="champion"]')).to_contain_text("Churn v1")
    latest = page.locator("#live-history tbody tr").first
    expect(latest).to_have_attribute("data-kind", "rolled_back")
    expect(latest).to_contain_text("admin")
    expect(latest).to_contain_text("v2 misses churners in the new region")

    # The calls so far are in the prediction log: the curl call, Try it, and the refused Try it.
    predlog.drain()
    portal.click_to_page(page.get_by_role("link", name="Prediction log"))
    expect(page.locator("#predictions-table tbody tr")).to_have_count(3)
    expect(page.locator("#export-csv")).to_be_visible()
    portal.check_a11y()
    portal.click_to_page(page.locator("#predictions-table tbody tr").last.get_by_role("link"))
    expect(page.locator("#inputs-table")).to_contain_text("age")
    portal.check_a11y()
    _sign_out(portal, "admin")

    # The viewer sees the page, the snippets and Try it, the calls in the chart, and no change forms.
    portal.log_in("viewer")
    portal.click_to_page(page.get_by_role("link", name="Deployments", exact=True))
    portal.click_to_page(page.get_by_role("link", name="Churn (production)"))
    expect(page.locator("#live-chart")).to_be_visible()
    expect(page.locator('[data-live="requests"]')).to_have_text("3")
    expect(page.locator("#snippet-python")).to_contain_text(url)
    expect(page.locator("#try-form")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Roll back"))).to_have_count(0)
    expect(page.locator("#tokens")).to_have_count(0)
    expect(page.locator("#manage")).to_have_count(0)
