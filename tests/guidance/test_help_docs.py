"""The Help page per role, and the user docs served inside the portal (allow-listed, escaped, signed-in only)."""

from __future__ import annotations

import re

import pytest

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


@pytest.fixture
def docs(settings, tmp_path):
    folder = tmp_path / "docs"
    (folder / "images").mkdir(parents=True)
    (folder / "getting-started.md").write_text(
        "# Getting started\n\nRead [the approver guide](guide-approver.md#decide) or [ops](operations.md).\n\n"
        "![The home page](images/home.png)\n\n<script>alert('x')</script>\n\n<b>bold?</b>\n\n"
        "[bad](javascript:alert(1))\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi')\n```\n")
    (folder / "guide-approver.md").write_text("# Approver guide\n\n## Decide\n\nText.\n")
    (folder / "operations.md").write_text("# Operations\n")
    (folder / "images" / "home.png").write_bytes(PNG)
    (folder / "images" / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    (folder / "images" / "notes.txt").write_text("no")
    (tmp_path / "secret.md").write_text("# Secret\n")
    settings.PORTAL_DOCS_DIR = folder
    return folder


@pytest.mark.parametrize("persona, first", [("scientist", "scientist"), ("approver", "approver"),
                                            ("viewer", "viewer"), ("admin", "admin"), ("staff", "admin")])
def test_help_puts_the_persons_own_checklist_first(people, client_as, persona, first):
    html = client_as(people[persona]).get("/help/").content.decode()
    order = re.findall(r'data-help-checklist="([a-z]+)"', html)
    assert order[0] == first and set(order) == {"scientist", "approver", "viewer", "admin"}


def test_help_is_linked_from_the_navbar_and_lists_the_docs(people, client_as, docs):
    html = client_as(people["viewer"]).get("/").content.decode()
    assert 'href="/help/"' in html
    help_page = client_as(people["viewer"]).get("/help/").content.decode()
    assert 'href="/help/docs/getting-started/"' in help_page and "Approver guide" in help_page


def test_a_doc_renders_with_links_images_tables_and_code(people, client_as, docs):
    response = client_as(people["viewer"]).get("/help/docs/getting-started/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'href="/help/docs/guide-approver/#decide"' in html and 'href="/help/docs/operations/"' in html
    assert 'src="/help/docs/images/home.png"' in html
    assert "<table>" in html and "<code" in html and 'id="getting-started"' in html


def test_raw_html_in_a_doc_is_escaped(people, client_as, docs):
    html = client_as(people["viewer"]).get("/help/docs/getting-started/").content.decode()
    assert "<script>alert" not in html and "&lt;script&gt;" in html
    assert "<b>bold?</b>" not in html
    assert "javascript:" not in html


@pytest.mark.parametrize("path", [
    "/help/docs/..%2Fsecret/", "/help/docs/../secret/", "/help/docs/%2Fetc%2Fpasswd/", "/help/docs//etc/passwd/",
    "/help/docs/secret/", "/help/docs/getting-started.md/", "/help/docs/images/notes.txt",
    "/help/docs/images/..%2F..%2Fsecret.md", "/help/docs/images/missing.png", "/help/docs/nothing/",
    "/help/docs/Getting-Started/",
])
def test_anything_but_an_allowed_doc_is_404(people, client_as, docs, path):
    assert client_as(people["viewer"]).get(path).status_code == 404


def test_images_are_served_png_and_svg(people, client_as, docs):
    client = client_as(people["viewer"])
    png = client.get("/help/docs/images/home.png")
    assert png.status_code == 200 and png["Content-Type"] == "image/png" and b"".join(png.streaming_content) == PNG
    svg = client.get("/help/docs/images/logo.svg")
    assert svg["Content-Type"] == "image/svg+xml" and "sandbox" in svg["Content-Security-Policy"]


@pytest.mark.parametrize("path", ["/help/", "/help/docs/getting-started/", "/help/docs/images/home.png"])
def test_anonymous_is_sent_to_sign_in(client, docs, path):
    response = client.get(path)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_real_docs_folder_is_served(people, client_as):
    from apps.guidance import docs as real_docs

    for entry in real_docs.index()[:3]:
        assert client_as(people["viewer"]).get(entry["url"]).status_code == 200
