"""Browser fixtures: Debian's Chromium driven by Playwright, with an axe-core WCAG 2.1 AA check on every page.

Tests drive the site through `portal` (a `PortalBrowser`): `portal.visit(path)`, `portal.log_in(...)`, and
`portal.click_to_page(locator)` for links and form buttons (or `portal.check_a11y()` after any other
step that loads a page). The fixture records every
main-frame navigation and fails the test at teardown if a page was never checked, so a new step that
forgets the accessibility check cannot pass silently.

The site's real Content-Security-Policy is enforced (no `bypass_csp`): axe-core and the violation listener
reach the page through Playwright (CDP), which CSP does not govern, and any CSP violation a page causes, as
a `securitypolicyviolation` event or a console message, fails the test at teardown.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, Response, sync_playwright

from tests.conftest import PASSWORD

# Playwright's sync API runs an asyncio loop in the test thread; the ORM set-up there is still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AXE_JS = "var/test-tools/node_modules/axe-core/axe.min.js"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
SCREENSHOT_DIR = REPO_ROOT / "var/test/screenshots"

RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return result.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                                      targets: v.nodes.map(n => n.target.join(' '))}));
}"""
# Installed in every document before its own scripts run; reports to Python through an exposed binding, so
# violations survive navigations. Runs via CDP, so the CSP under test does not block it.
CSP_LISTENER = """(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__portalCspViolation({page: document.location.href, directive: e.effectiveDirective || e.violatedDirective,
                                 blocked: e.blockedURI, source: e.sourceFile, line: e.lineNumber, sample: e.sample,
                                 disposition: e.disposition});
  }, true);
})();"""
# portal.js draws Plotly charts after load; check the drawn chart, not an empty box.
CHARTS_DRAWN = "() => [...document.querySelectorAll('[data-plotly-source]')].every(el => el.dataset.drawn)"


def format_violations(violations: list[dict], *, max_targets: int = 3) -> str:
    lines = []
    for v in violations:
        targets = ", ".join(v["targets"][:max_targets])
        more = f" (+{len(v['targets']) - max_targets} more)" if len(v["targets"]) > max_targets else ""
        lines.append(f"  [{v['impact']}] {v['id']}: {v['help']}\n      at {targets}{more}\n      {v['helpUrl']}")
    return "\n".join(lines)


class PortalBrowser:
    """One person's browser tab on the live server; every page it lands on is checked with axe-core."""

    def __init__(self, page: Page, axe_source: str, csp_violations: list[str] | None = None):
        self.page = page
        self._axe_source = axe_source
        self.navigations: list[str] = []   # main-frame URLs, in order
        self.checked_up_to = 0             # how many of them check_a11y has covered
        self.csp_violations = csp_violations if csp_violations is not None else []
        page.on("framenavigated", self._record_navigation)
        page.on("console", self._record_csp_console)

    def _record_csp_console(self, message) -> None:
        if "content security policy" in message.text.lower():
            self.csp_violations.append(f"console on {self.page.url}: {message.text}")

    def _record_navigation(self, frame) -> None:
        if frame == self.page.main_frame:
            self.navigations.append(frame.url)

    @property
    def unchecked_pages(self) -> list[str]:
        return self.navigations[self.checked_up_to:]

    def check_a11y(self) -> None:
        """Run axe-core (WCAG 2.0/2.1 A and AA rules) on the current page; fail listing each violation."""
        self.page.wait_for_load_state("load")
        self.page.wait_for_function(CHARTS_DRAWN)
        if not self.page.evaluate("() => typeof window.axe !== 'undefined'"):
            self.page.evaluate(self._axe_source)
        violations = self.page.evaluate(RUN_AXE, WCAG_TAGS)
        self.checked_up_to = len(self.navigations)
        if violations:
            pytest.fail(f"WCAG 2.1 AA violations on {self.page.url}:\n{format_violations(violations)}",
                        pytrace=False)

    def visit(self, path: str, *, status: int = 200) -> Response:
        """Open a path, check the HTTP status, then the page's accessibility."""
        response = self.page.goto(path)
        assert response is not None, f"GET {path}: no response"
        assert response.status == status, (
            f"GET {path}: expected HTTP {status}, got {response.status} at {self.page.url}")
        self.check_a11y()
        return response

    def click_to_page(self, target) -> Response:
        """Click a link or submit button (a Locator), wait for the page it loads, check it; return its response."""
        with self.page.expect_navigation() as navigation:
            target.click()
        self.check_a11y()
        return navigation.value

    def log_in(self, username: str, password: str = PASSWORD) -> Response:
        """Sign in through the real login form, finding the fields by their labels as a person would."""
        self.visit("/accounts/login/")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        return self.click_to_page(self.page.get_by_role("button", name="Sign in"))


@pytest.fixture(scope="session")
def axe_source() -> str:
    path = Path(os.environ.get("AXE_CORE_JS") or DEFAULT_AXE_JS)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        pytest.fail(f"axe-core is missing: {path} does not exist. Run `make test-tools` to install it "
                    "(or set AXE_CORE_JS to the path of axe.min.js).", pytrace=False)
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing. Run `make test-tools` to install Debian's chromium.", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def format_csp_violation(v: dict) -> str:
    where = f" ({v['source']}:{v['line']})" if v.get("source") else ""
    sample = f" sample {v['sample']!r}" if v.get("sample") else ""
    return f"{v['directive']} blocked {v['blocked'] or '(unknown)'} on {v['page']}{where}{sample}"


@pytest.fixture
def portal(browser, live_server, axe_source):
    # The site's CSP is enforced: a page that needs an inline script, style attribute or foreign origin the
    # policy forbids fails here, as it would for a real user.
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    csp_violations: list[str] = []
    context.expose_function("__portalCspViolation", lambda v: csp_violations.append(format_csp_violation(v)))
    context.add_init_script(CSP_LISTENER)
    tab = PortalBrowser(context.new_page(), axe_source, csp_violations)
    yield tab
    unchecked = tab.unchecked_pages
    context.close()
    problems = []
    if csp_violations:
        listed = "\n".join(f"  {line}" for line in dict.fromkeys(csp_violations))
        problems.append(f"Content-Security-Policy violations (fix the template or static JS, not the policy):\n"
                        f"{listed}")
    if unchecked:
        problems.append(f"Pages visited without an accessibility check (use visit/click_to_page/check_a11y): "
                        f"{unchecked}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def screenshot_dir() -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT_DIR


DEMO_PASSWORD = "portal-demo-2026"


@pytest.fixture
def demo_week(jobs_stay_in_process, settings, tmp_path, monkeypatch):
    """The demo as `make demo` and `make demo-traffic` leave it (a week of traffic with a drift, outcomes, the
    drift alert and the retrained challenger awaiting approval); returns the commands' output."""
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path / "var"
    settings.REDIS_URL = ""
    monkeypatch.setenv("DEMO_PASSWORD", DEMO_PASSWORD)
    out = io.StringIO()
    for command in ("load_demo", "load_demo_models", "load_demo_approvals", "load_demo_deployments", "demo_traffic"):
        call_command(command, stdout=out)
    return out.getvalue()
