"""Empty list pages say what to do next: an action for people who may take it, who can for the others."""

from __future__ import annotations

import pytest


def _empty(html: str, name: str) -> str:
    start = html.index(f'data-empty="{name}"')
    return html[start:html.index("</div>", start)]


@pytest.mark.parametrize("path, name, persona, action", [
    ("/projects/alpha/datasets/", "datasets", "scientist", 'href="#upload-heading"'),
    ("/projects/alpha/datasets/", "datasets", "viewer", 'href="/projects/alpha/models/"'),
    ("/projects/alpha/models/", "models", "scientist", 'href="/projects/alpha/models/import/"'),
    ("/deployments/", "deployments", "scientist", 'href="/projects/alpha/models/"'),
    ("/approvals/?tab=mine", "my-requests", "scientist", 'href="/projects/alpha/models/"'),
    ("/jobs/", "jobs", "scientist", 'href="/projects/alpha/datasets/"'),
])
def test_an_empty_list_offers_the_next_step(people, client_as, path, name, persona, action):
    response = client_as(people[persona]).get(path)
    assert response.status_code == 200
    assert action in _empty(response.content.decode(), name)


@pytest.mark.parametrize("path, name, persona", [
    ("/projects/alpha/models/", "models", "viewer"),
    ("/deployments/", "deployments", "viewer"),
    ("/approvals/?tab=mine", "my-requests", "approver"),
    ("/jobs/", "jobs", "viewer"),
])
def test_no_action_button_for_people_who_may_not_act(people, client_as, path, name, persona):
    assert "data-empty-action" not in _empty(client_as(people[persona]).get(path).content.decode(), name)


def test_the_alerts_page_explains_nothing_is_watched_before_a_deployment(people, client_as):
    html = client_as(people["scientist"]).get("/alerts/").content.decode()
    assert "nothing is watched" in _empty(html, "alerts")
