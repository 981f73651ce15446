"""The user documentation in docs/*.md, rendered inside the portal.

Only files that exist in docs/ are served (the allow-list is the directory listing, names checked
against a strict pattern first, so no path can leave it). Raw HTML in the Markdown is escaped, link
targets are limited to safe schemes, links between docs (`other.md#part`) and images (`images/x.png`)
are rewritten to the portal's own URLs.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree.ElementTree import Element

import markdown
from django.conf import settings
from django.urls import reverse
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,80}$")
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(png|svg)$")
_DOC_LINK = re.compile(r"^(?:\./)?([a-z0-9][a-z0-9_-]{0,80})\.md(#[\w.-]*)?$")
_IMAGE_SRC = re.compile(r"^(?:\./)?images/([A-Za-z0-9][A-Za-z0-9_.-]{0,120}\.(?:png|svg))$")
_SAFE_HREF = re.compile(r"^(https?:|mailto:|#|/(?!/))", re.IGNORECASE)
CONTENT_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def docs_dir() -> Path:
    return Path(getattr(settings, "PORTAL_DOCS_DIR", settings.BASE_DIR / "docs"))


def available() -> dict[str, Path]:
    """{name: path} of every Markdown file in docs/ (not in subfolders)."""
    folder = docs_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.md")) if p.is_file() and NAME.match(p.stem)}


def doc_path(name: str) -> Path | None:
    if not NAME.match(name or ""):
        return None
    return available().get(name)


def image_path(file_name: str) -> Path | None:
    if not IMAGE.match(file_name or ""):
        return None
    folder = (docs_dir() / "images").resolve()
    path = (folder / file_name).resolve()
    if path.parent != folder or not path.is_file():
        return None
    return path


def title_of(path: Path) -> str:
    """The document's first `# ` heading, else its file name in words."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("# "):
                return line[2:].strip()
    return path.stem.replace("-", " ").capitalize()


def index() -> list[dict]:
    return [{"name": name, "title": title_of(path), "url": reverse("guidance-doc", args=[name])}
            for name, path in available().items()]


class _PortalLinks(Treeprocessor):
    """Doc-to-doc links and images to portal URLs; anything that is not a safe link target is dropped."""

    def run(self, root: Element) -> None:
        for element in root.iter("a"):
            href = element.get("href", "")
            match = _DOC_LINK.match(href)
            if match:
                element.set("href", reverse("guidance-doc", args=[match.group(1)]) + (match.group(2) or ""))
            elif not _SAFE_HREF.match(href):
                element.attrib.pop("href", None)
        for element in root.iter("img"):
            match = _IMAGE_SRC.match(element.get("src", ""))
            if match:
                element.set("src", reverse("guidance-doc-image", args=[match.group(1)]))
                element.set("class", "img-fluid border rounded")
            elif not element.get("src", "").startswith(("https:", "/")):
                element.attrib.pop("src", None)


class _SafeDocs(Extension):
    def extendMarkdown(self, md) -> None:  # noqa: N802 (Markdown's API)
        # Without these two, raw HTML is plain text: the serializer escapes it (safe by default).
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")
        md.treeprocessors.register(_PortalLinks(md), "portal_links", 0)


def render(path: Path) -> dict:
    """{"html", "toc", "title"} of one document."""
    md = markdown.Markdown(extensions=["tables", "fenced_code", "toc", _SafeDocs()],
                           extension_configs={"toc": {"permalink": False}}, output_format="html")
    text = path.read_text(encoding="utf-8", errors="replace")
    html = md.convert(text)
    return {"html": html, "toc": md.toc_tokens, "title": title_of(path)}
