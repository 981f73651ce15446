"""Browser journey for data: a scientist uploads and explores, a viewer sees no personal data, an admin reveals it.

Profiling runs on a real Celery worker; every page (and the data grid after each htmx update) is checked
with axe-core.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.datasets.conftest import PEOPLE_CSV

pytestmark = pytest.mark.e2e


def _open_latest_version(portal):
    page = portal.page
    portal.visit("/projects/alpha/datasets/")
    portal.click_to_page(page.locator("#datasets-table").get_by_role("link", name="v1"))
    expect(page.locator("#data-grid")).to_be_visible(timeout=15_000)
    portal.check_a11y()


def test_scientist_uploads_explores_sorts_and_filters_then_viewer_and_admin_see_their_part(
        portal, people, celery_worker_process, tmp_path):
    page = portal.page
    csv_path = tmp_path / "people.csv"
    csv_path.write_bytes(PEOPLE_CSV)

    portal.log_in("scientist")
    portal.visit("/projects/alpha/")
    portal.click_to_page(page.get_by_role("link", name="Datasets").first)
    expect(page.get_by_text("No datasets yet.")).to_be_visible()
    page.get_by_label("Data file").set_input_files(str(csv_path))
    page.get_by_label("Dataset name").fill("customers")
    with page.expect_navigation(url=re.compile(r"/datasets/[0-9a-f-]+/v1/$")):
        page.get_by_role("button", name="Upload").click()
    portal.check_a11y()

    # The version page polls the profiling job, then reloads itself with the profile.
    expect(page.locator('[data-stat="rows"]')).to_have_text("200", timeout=60_000)
    portal.check_a11y()
    expect(page.locator("#columns-table tr[data-column=email]")).to_contain_text("E-mail addresses")
    charts = page.locator(".plotly-chart[data-plotly-source]")
    assert len(set(charts.evaluate_all("els => els.map(e => e.dataset.plotlySource)"))) == charts.count() > 1
    expect(page.locator("#warnings")).to_be_visible()
    expect(page.locator("#data-grid")).to_be_visible()
    portal.check_a11y()

    grid = page.locator("#data-grid")
    grid.get_by_role("button", name=re.compile(r"^age")).click()
    expect(grid.locator("th[aria-sort=ascending]")).to_contain_text("age")
    expect(grid.locator("tbody tr").first.locator("td").nth(3)).to_have_text("20")
    page.get_by_label("Filter segment").fill("=gold")
    page.get_by_label("Filter segment").press("Enter")
    expect(page.locator("#data-grid caption")).to_contain_text("67 matching rows")
    portal.check_a11y()

    page.get_by_role("button", name="scientist").click()
    portal.click_to_page(page.get_by_role("button", name="Sign out"))

    portal.log_in("viewer")
    _open_latest_version(portal)
    expect(page.locator("#columns-table tr[data-column=email]")).to_contain_text("Hidden: personal data")
    expect(page.locator("#data-grid thead")).not_to_contain_text("email")
    expect(page.locator("body")).not_to_contain_text("@example.org")
    page.get_by_role("button", name="viewer").click()
    portal.click_to_page(page.get_by_role("button", name="Sign out"))

    portal.log_in("admin")
    _open_latest_version(portal)
    portal.click_to_page(page.locator("#columns-table tr[data-column=email]").get_by_role(
        "button", name=re.compile("Reveal to viewers")))
    expect(page.get_by_role("status").filter(has_text="now visible to viewers")).to_be_visible()
    page.get_by_role("button", name="admin").click()
    portal.click_to_page(page.get_by_role("button", name="Sign out"))

    portal.log_in("viewer")
    _open_latest_version(portal)
    expect(page.locator("#data-grid thead")).to_contain_text("email")
