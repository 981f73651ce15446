"""The first-run tour: one per role, shown on the home page until dismissed, and a new role's tour once."""

from __future__ import annotations

import re

import pytest

from apps.accounts.models import Membership
from apps.guidance.models import TourProgress


def _tour_role(response) -> str | None:
    match = re.search(r'id="tour"[^>]*data-tour-role="([a-z]+)"', response.content.decode())
    return match.group(1) if match else None


@pytest.mark.parametrize("persona, role", [("viewer", "viewer"), ("scientist", "scientist"),
                                           ("approver", "approver"), ("admin", "admin"), ("staff", "admin")])
def test_each_role_sees_its_own_tour_on_the_home_page(people, client_as, persona, role):
    response = client_as(people[persona]).get("/")
    assert response.status_code == 200
    assert _tour_role(response) == role
    assert response.content.decode().count("data-tour-step=") in range(3, 6)


def test_the_highest_role_in_any_project_decides(people, client_as, other_project):
    Membership.objects.create(user=people["scientist"], project=other_project, role="approver")
    assert _tour_role(client_as(people["scientist"]).get("/")) == "approver"


def test_a_person_in_no_project_sees_the_stakeholder_tour(db, client_as):
    from tests.conftest import make_user

    assert _tour_role(client_as(make_user("newcomer")).get("/")) == "viewer"


def test_dismissing_hides_the_tour_for_good(people, client_as):
    client = client_as(people["scientist"])
    assert _tour_role(client.get("/")) == "scientist"
    response = client.post("/help/tour/dismiss/", {"next": "/operations/"})
    assert response.status_code == 302 and response["Location"] == "/operations/"
    assert _tour_role(client.get("/")) is None
    assert _tour_role(client.get("/operations/")) is None
    assert TourProgress.objects.get(user=people["scientist"], role="scientist").dismissed_at is not None


def test_dismiss_refuses_an_outside_redirect(people, client_as):
    response = client_as(people["viewer"]).post("/help/tour/dismiss/", {"next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_dismiss_needs_a_post_with_csrf(people):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(people["viewer"])
    assert client.get("/help/tour/dismiss/").status_code == 405
    assert client.post("/help/tour/dismiss/").status_code == 403
    assert not TourProgress.objects.filter(dismissed_at__isnull=False).exists()


def test_a_new_role_gets_its_tour_once(people, client_as):
    client = client_as(people["scientist"])
    client.post("/help/tour/dismiss/")
    Membership.objects.filter(user=people["scientist"]).update(role="approver")
    assert _tour_role(client.get("/")) == "approver"
    client.post("/help/tour/dismiss/")
    assert _tour_role(client.get("/")) is None


def test_show_the_tour_again_from_help(people, client_as):
    client = client_as(people["approver"])
    client.post("/help/tour/dismiss/")
    help_page = client.get("/help/").content.decode()
    assert "Show the tour again" in help_page
    response = client.post("/help/tour/restart/", {"next": "/"})
    assert response.status_code == 302
    assert _tour_role(client.get("/")) == "approver"


def test_the_tour_works_without_javascript_as_a_list_of_links(people, client_as):
    html = client_as(people["scientist"]).get("/").content.decode()
    tour = html[html.index('id="tour"'):html.index("</section>", html.index('id="tour"'))]
    assert tour.count("Take me there") >= 3
    assert 'action="/help/tour/dismiss/"' in tour and "csrfmiddlewaretoken" in tour


def test_the_tour_stays_off_working_pages(people, client_as):
    assert _tour_role(client_as(people["scientist"]).get("/jobs/")) is None


def test_tour_api(people, api_as, client):
    api = api_as(people["approver"])
    state = api.get("/api/v1/guidance/tour/").json()
    assert state["role"] == "approver" and state["show"] is True and len(state["steps"]) >= 3
    response = api.post("/api/v1/guidance/tour/dismiss/")
    assert response.status_code == 200 and response.json()["show"] is False
    assert client.get("/api/v1/guidance/tour/").status_code in (401, 403)
    assert client.post("/api/v1/guidance/tour/dismiss/").status_code in (401, 403)


def test_anonymous_cannot_dismiss(client):
    response = client.post("/help/tour/dismiss/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
