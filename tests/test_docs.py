"""The user documentation stays true to the code: links and anchors resolve, images exist, and every `make`
target, management command and environment variable it names is one the project has (a light check)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
from django.core.management import get_commands

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))
# Where the variables the docs name are read: settings, the compose file, gunicorn, the Makefile, the code.
VARIABLE_SOURCES = [ROOT / "portal/settings.py", ROOT / "docker-compose.yml", ROOT / "gunicorn.conf.py",
                     ROOT / "Makefile", ROOT / "Dockerfile", *sorted((ROOT / "apps").rglob("*.py"))]
# Variables that belong to other programs (PostgreSQL's image, MLflow, Django's own, the shell examples).
FOREIGN_VARIABLES = {"POSTGRES_PASSWORD", "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_BACKEND_STORE_URI",
                     "DJANGO_SETTINGS_MODULE", "GUNICORN_CMD_ARGS", "PORTAL_IMAGE", "WEB_PUBLISH",
                     "MLFLOW_REGISTRY_URI", "DEMO_TRAFFIC_ARGS", "PYTEST_ARGS", "BENCH_ARGS", "BENCHES"}
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and the portal's Markdown rendering) gives a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = "".join(ch for ch in text if ch in "- " or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def prose(path: Path) -> str:
    return CODE_BLOCK.sub("", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(doc):
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    assert not broken, f"{doc.name}:\n  " + "\n  ".join(broken)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_image_exists(doc):
    missing = [target for target in IMAGE.findall(doc.read_text(encoding="utf-8"))
               if not re.match(r"^[a-z]+:", target) and not (doc.parent / target).is_file()]
    assert not missing, f"{doc.name} shows images that do not exist: {missing}"


def test_readme_links_into_the_docs_resolve():
    readme = ROOT / "README.md"
    broken = []
    for target in LINK.findall(prose(readme)):
        file_part, _, anchor = target.partition("#")
        if not file_part.startswith("docs/"):
            continue
        linked = ROOT / file_part
        if not linked.exists() or (anchor and anchor not in anchors(linked)):
            broken.append(target)
    assert not broken, f"README.md links to missing docs or anchors: {broken}"


def test_make_targets_named_in_the_docs_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.MULTILINE))
    named = {name for doc in DOC_FILES for name in re.findall(r"`make ([a-z][a-z0-9-]*)", doc.read_text("utf-8"))}
    assert named, "the docs should mention make targets (make demo at least)"
    assert named <= targets, f"docs name make targets the Makefile lacks: {sorted(named - targets)}"


def test_management_commands_named_in_the_docs_exist():
    commands = set(get_commands())
    named = set()
    for doc in DOC_FILES:
        named |= set(re.findall(r"manage\.py ([a-z_]+)", doc.read_text(encoding="utf-8")))
    assert named, "the docs should mention management commands"
    assert named <= commands, f"docs name management commands that do not exist: {sorted(named - commands)}"


def test_environment_variables_named_in_the_docs_are_read_somewhere():
    sources = "\n".join(path.read_text(encoding="utf-8") for path in VARIABLE_SOURCES)
    named = set()
    for doc in DOC_FILES:
        if doc.name == "benchmarks.md":  # measurements, with the benchmark scripts' own variables
            continue
        named |= set(re.findall(r"`((?:PORTAL|OIDC|WEB|MLFLOW|DATABASE|CELERY|REDIS|SECRET|EMAIL|SECURE|"
                                r"SESSION|CSRF|LOGIN|TOKEN|DEMO|WORKER|STATIC|LOG|DATA|DEFAULT|ALLOWED|USE|"
                                r"TIME|DEBUG)[A-Z0-9_]*)[`=]", doc.read_text(encoding="utf-8")))
    unknown = sorted(name for name in named - FOREIGN_VARIABLES if not re.search(rf"\b{name}\b", sources))
    assert not unknown, f"docs name environment variables nothing reads: {unknown}"


def test_every_role_guide_has_screenshots():
    for name in ("guide-scientist.md", "guide-approver.md", "guide-stakeholder.md", "guide-admin.md"):
        assert IMAGE.search((DOCS / name).read_text(encoding="utf-8")), f"{name} has no screenshot"
