"""The user documentation's screenshots, taken by this test on every run so they never go stale.

The demo as `make demo` and `make demo-traffic` leave it (a project, five people, a model, a deployment with a week
of traffic and a drift alert) is walked once per role; each page is checked with axe-core like every browser test,
then photographed into docs/images/. The test fails when a doc references a screenshot that nobody takes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from apps.approvals.models import ApprovalRequest
from apps.datasets.models import Dataset
from apps.monitoring.models import Alert
from apps.registry.evidence import baselines
from apps.registry.models import RegisteredModel
from apps.registry.tasks import compare_baselines_task
from tests.e2e.conftest import DEMO_PASSWORD
from tests.e2e.test_approvals_journey import _sign_out

pytestmark = pytest.mark.e2e

SLUG = "churn-risk-staging"
DOCS = Path(__file__).resolve().parents[2] / "docs"
IMAGES = DOCS / "images"
VIEWPORT = {"width": 1280, "height": 800}
TALLEST = 1500  # px kept of a long page: the part a reader needs, not a 6,000 px strip
MAX_BYTES = 250_000
# A first-run tour panel would cover the page in every shot; it is hidden for the photo, not dismissed for good.
HIDE_TOUR = "#tour { display: none !important; }"


class Camera:
    """Takes the screenshots into docs/images/ and remembers which it took."""

    def __init__(self, portal):
        self.portal = portal
        self.page = portal.page
        self.taken: list[Path] = []
        self.page.set_viewport_size(VIEWPORT)

    def shot(self, name: str, *, full_page: bool = False, tour: bool = False) -> None:
        page = self.page
        if not tour:
            page.add_style_tag(content=HIDE_TOUR)
        page.wait_for_load_state("networkidle")
        path = IMAGES / f"{name}.png"
        options = {"animations": "disabled", "caret": "hide", "scale": "css"}
        if full_page:
            height = min(TALLEST, page.evaluate("() => document.documentElement.scrollHeight"))
            options.update(full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height})
        page.screenshot(path=str(path), **options)
        _shrink(path)
        self.taken.append(path)

    def section(self, selector: str, name: str) -> None:
        """One part of the current page (a chart deep down a long page), at the page's width."""
        self.page.add_style_tag(content=HIDE_TOUR)
        section = self.page.locator(selector)
        section.scroll_into_view_if_needed()
        path = IMAGES / f"{name}.png"
        section.screenshot(path=str(path), animations="disabled", caret="hide", scale="css")
        _shrink(path)
        self.taken.append(path)

    def visit(self, path: str, name: str, *, full_page: bool = False) -> None:
        self.portal.visit(path)
        self.shot(name, full_page=full_page)


def _shrink(path: Path) -> None:
    """Screenshots are flat UI colours: a 256-colour palette keeps them readable at a fraction of the bytes."""
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def referenced_images() -> set[str]:
    names = set()
    for doc in DOCS.glob("*.md"):
        names |= set(re.findall(r"\]\((images/[^)\s]+\.png)\)", doc.read_text(encoding="utf-8")))
    return names


def test_docs_screenshots_are_taken_for_every_role(portal, demo_week, settings, monkeypatch):
    IMAGES.mkdir(parents=True, exist_ok=True)
    camera = Camera(portal)
    page = portal.page
    model = RegisteredModel.objects.get(name="Churn risk")
    dataset = Dataset.objects.get(name="Customer churn")
    alert = Alert.objects.get(rule__metric="drift_psi")
    waiting = ApprovalRequest.objects.filter(status=ApprovalRequest.Status.PENDING).order_by("-created_at").first()
    assert waiting is not None, "the demo week should leave a retrained version waiting for approval"

    # "Is a simpler model enough?" computed on the demo model, as a scientist's click would (in this process).
    monkeypatch.setattr(compare_baselines_task, "delay", lambda *args, **kwargs: None)
    job = baselines.start_baselines(model.versions.get(number=1), actor=model.created_by)
    baselines.compare_baselines(str(job.pk))

    # Signing in (with single sign-on configured, the button an agency's people use), then a stakeholder's pages.
    settings.OIDC_ISSUER, settings.OIDC_RP_CLIENT_ID, settings.OIDC_PROVIDER_NAME = (
        "https://sso.agency.example/realms/agency", "portal", "Agency ID")
    portal.visit("/accounts/login/")
    expect(page.get_by_role("link", name="Sign in with Agency ID")).to_be_visible()
    camera.shot("sign-in")
    settings.OIDC_ISSUER = ""
    portal.log_in("viewer", DEMO_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Model Operations Center")
    camera.shot("operations-center", full_page=True)
    camera.visit("/operations/impact/", "impact", full_page=True)
    camera.visit(f"/deployments/{SLUG}/monitoring/", "monitoring", full_page=True)
    expect(page.locator("#drift")).to_contain_text("tenure_months")
    camera.section("#drift", "monitoring-drift")
    camera.visit(f"/alerts/{alert.uuid}/", "alert", full_page=True)
    camera.visit(f"/models/{model.slug}/v1/", "model-card-viewer", full_page=True)
    _sign_out(portal, "viewer")

    # A data scientist: data, models, deployment.
    portal.log_in("scientist", DEMO_PASSWORD)
    camera.visit("/projects/demo/datasets/", "datasets")
    camera.visit(f"/datasets/{dataset.uuid}/v1/", "dataset-version", full_page=True)
    camera.visit("/projects/demo/models/", "models")
    camera.visit(f"/models/{model.slug}/v1/", "model-card", full_page=True)
    expect(page.locator("#baselines-sentence")).to_contain_text("than a logistic regression")
    camera.section("#baselines", "baselines")
    camera.section("#readiness", "readiness")
    camera.visit(f"/models/{model.slug}/compare/?v=1&v=2", "model-compare", full_page=True)
    camera.visit("/projects/demo/models/import/", "import-wizard")
    camera.visit(f"/deployments/{SLUG}/", "deployment", full_page=True)
    camera.visit(f"/deployments/{SLUG}/retraining/", "retraining", full_page=True)
    _sign_out(portal, "scientist")

    # An approver: the queue, one request's evidence, the audit trail.
    portal.log_in("approver1", DEMO_PASSWORD)
    expect(page.locator("#tour")).to_have_attribute("data-tour-role", "approver")
    camera.shot("tour-approver", tour=True)
    camera.visit("/help/", "help")
    camera.visit("/approvals/", "approvals-queue")
    camera.visit(f"/approvals/{waiting.uuid}/", "approval-request", full_page=True)
    # Filtered to decisions: the unfiltered demo trail has rows too wide for a readable picture.
    camera.visit("/audit/?project=demo&action=approval.decision", "audit")
    _sign_out(portal, "approver1")

    # A project admin: members, environments, tokens, jobs.
    portal.log_in("admin", DEMO_PASSWORD)
    camera.visit("/projects/demo/members/", "members", full_page=True)
    camera.visit("/projects/demo/environments/", "environments", full_page=True)
    camera.visit("/account/tokens/", "api-tokens")
    camera.visit("/jobs/", "jobs")

    for path in camera.taken:
        assert path.is_file() and path.stat().st_size > 1_000, f"{path} was not written"
        assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes; keep it small"
    taken = {f"images/{path.name}" for path in camera.taken}
    missing = referenced_images() - taken
    assert not missing, f"docs reference screenshots this test does not take: {sorted(missing)}"
