"""notify(): rows and e-mail; the bell, the notification page, and the API (own notifications only)."""

from __future__ import annotations

import pytest
from django.core import mail

from apps.accounts import services
from apps.accounts.models import Notification

pytestmark = pytest.mark.django_db


def tell(*users, url="/projects/alpha/", **extra):
    fields = {"kind": "test.ping", "title": "Something needs you", "body": "Have a look.", "url": url, **extra}
    return services.notify(list(users), **fields)


def test_notify_creates_one_row_per_active_user_and_mails_each(people, project, settings,
                                                              django_capture_on_commit_callbacks):
    settings.PORTAL_BASE_URL = "https://portal.example.org/"
    people["viewer"].is_active = False
    people["viewer"].save()
    people["scientist"].email = ""
    people["scientist"].save()
    with django_capture_on_commit_callbacks(execute=True):
        created = tell(people["admin"], people["approver"], people["admin"], people["viewer"], people["scientist"],
                       project=project)
    assert sorted(n.recipient.username for n in created) == ["admin", "approver", "scientist"]
    assert Notification.objects.filter(recipient=people["viewer"]).count() == 0
    assert Notification.objects.get(recipient=people["admin"]).project == project
    # one mail each (no shared To: line), none for the user without an address
    assert sorted(m.to[0] for m in mail.outbox) == ["admin@example.org", "approver@example.org"]
    message = mail.outbox[0]
    assert message.subject == "Something needs you" and len(message.to) == 1
    assert "Have a look." in message.body and "https://portal.example.org/projects/alpha/" in message.body


def test_mail_waits_for_the_commit_and_can_be_turned_off(people, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tell(people["admin"])
    assert mail.outbox == [] and len(callbacks) == 1
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tell(people["admin"], email=False)
    assert callbacks == [] and mail.outbox == []


def test_a_mail_failure_is_logged_and_does_not_break_the_caller(people, settings, caplog, monkeypatch,
                                                                django_capture_on_commit_callbacks):
    def broken_send(self, *args, **kwargs):
        raise ConnectionRefusedError("no SMTP server")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", broken_send)
    with django_capture_on_commit_callbacks(execute=True):
        created = tell(people["admin"], people["approver"])
    assert len(created) == 2 and Notification.objects.count() == 2
    assert caplog.text.count("Could not e-mail the notification") == 2


def test_a_multi_line_title_becomes_a_one_line_subject(people, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        tell(people["admin"], title="Line one\nBcc: victim@example.org")
    assert mail.outbox[0].subject == "Line one Bcc: victim@example.org" and mail.outbox[0].bcc == []


@pytest.mark.parametrize("url", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x",
                                 "projects/alpha/"])
def test_notify_refuses_links_off_the_site(people, url):
    with pytest.raises(ValueError):
        tell(people["admin"], url=url)
    assert Notification.objects.count() == 0


def test_the_bell_shows_the_unread_count(people, client_as):
    tell(people["admin"])
    tell(people["admin"])
    tell(people["approver"])
    page = client_as(people["admin"]).get("/projects/").content.decode()
    assert 'id="notification-bell" data-unread="2"' in page and "2<span class=\"visually-hidden\"> unread" in page
    services.mark_all_read(actor=people["admin"])
    page = client_as(people["admin"]).get("/projects/").content.decode()
    assert 'data-unread="0"' in page and " unread</span>" not in page


def test_the_page_lists_own_notifications_newest_first_and_marks_all_read(people, client_as):
    tell(people["admin"], title="Older")
    tell(people["admin"], title="Newer")
    tell(people["outsider"], title="Not yours")
    client = client_as(people["admin"])
    page = client.get("/notifications/").content.decode()
    assert page.index("Newer") < page.index("Older") and "Not yours" not in page
    assert page.count("notification-unread") == 2 and "Mark all read" in page
    assert client.get("/notifications/read-all/").status_code == 405  # POST only
    response = client.post("/notifications/read-all/", follow=True)
    assert "2 notifications marked read." in response.content.decode()
    assert "notification-unread" not in response.content.decode()
    assert Notification.objects.get(title="Not yours").read_at is None
    assert "Newer" not in client.get("/notifications/?unread=1").content.decode()


def test_the_page_is_paginated(people, client_as):
    for i in range(30):
        tell(people["admin"], title=f"Note {i:02d}")
    client = client_as(people["admin"])
    first = client.get("/notifications/").content.decode()
    assert "Note 29" in first and "Note 04" not in first and "Page 1 of 2" in first
    assert "Note 04" in client.get("/notifications/?page=2").content.decode()


def test_open_marks_read_and_goes_to_the_page(people, client_as):
    notification = tell(people["admin"], url="/projects/alpha/?tab=members")[0]
    response = client_as(people["admin"]).get(f"/notifications/{notification.uuid}/open/")
    assert response.status_code == 302 and response["Location"] == "/projects/alpha/?tab=members"
    notification.refresh_from_db()
    assert notification.read_at is not None


def test_open_refuses_a_link_off_the_site(people, client_as):
    # notify() refuses such links; a row written some other way must still not become an open redirect.
    notification = Notification.objects.create(recipient=people["admin"], kind="x", title="Bad",
                                               url="https://evil.example/")
    response = client_as(people["admin"]).get(f"/notifications/{notification.uuid}/open/")
    assert response.status_code == 302 and response["Location"] == "/notifications/"


def test_open_of_someone_elses_notification_is_404(people, client_as):
    notification = tell(people["admin"])[0]
    for who in ("outsider", "staff", "approver"):
        assert client_as(people[who]).get(f"/notifications/{notification.uuid}/open/").status_code == 404
    notification.refresh_from_db()
    assert notification.read_at is None


def test_the_page_needs_a_sign_in(client, db):
    response = client.get("/notifications/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- API -----------------------------------------------------------------------------------------------------


def test_api_lists_only_own_notifications_and_filters_unread(people, api_as):
    mine, read = tell(people["admin"], title="Mine")[0], tell(people["admin"], title="Read already")[0]
    services.mark_read(read, actor=people["admin"])
    tell(people["approver"], title="Theirs")
    api = api_as(people["admin"])
    body = api.get("/api/v1/notifications/").json()
    assert [n["title"] for n in body["results"]] == ["Read already", "Mine"]
    unread = api.get("/api/v1/notifications/?unread=1").json()["results"]
    assert [n["id"] for n in unread] == [str(mine.uuid)] and unread[0]["unread"] is True
    assert unread[0]["url"] == "/projects/alpha/" and unread[0]["kind"] == "test.ping"


def test_api_marks_one_and_all_read(people, api_as):
    first, second = tell(people["admin"])[0], tell(people["admin"])[0]
    api = api_as(people["admin"])
    response = api.post(f"/api/v1/notifications/{first.uuid}/read/")
    assert response.status_code == 200 and response.json()["unread"] is False
    assert api.post(f"/api/v1/notifications/{first.uuid}/read/").status_code == 200  # twice is fine
    assert api.post("/api/v1/notifications/read-all/").json() == {"marked_read": 1}
    second.refresh_from_db()
    assert second.read_at is not None


def test_api_outsider_sees_and_marks_nothing(people, api_as):
    notification = tell(people["admin"])[0]
    api = api_as(people["outsider"])
    assert api.get("/api/v1/notifications/").json()["results"] == []
    assert api.get(f"/api/v1/notifications/{notification.uuid}/").status_code == 404
    assert api.post(f"/api/v1/notifications/{notification.uuid}/read/").status_code == 404
    assert api.post("/api/v1/notifications/read-all/").json() == {"marked_read": 0}
    assert api_as(people["staff"]).get("/api/v1/notifications/").json()["results"] == []
    notification.refresh_from_db()
    assert notification.read_at is None


def test_api_needs_authentication(db, client):
    assert client.get("/api/v1/notifications/").status_code in (401, 403)


def test_a_project_scoped_token_reads_that_projects_notifications_only(people, project, other_project, api_as):
    tell(people["admin"], title="Alpha", project=project)
    tell(people["admin"], title="Beta", project=other_project)
    tell(people["admin"], title="Nowhere")
    api = api_as(people["admin"], project=project)
    assert [n["title"] for n in api.get("/api/v1/notifications/").json()["results"]] == ["Alpha"]
    assert api.post("/api/v1/notifications/read-all/").json() == {"marked_read": 1}
    assert Notification.objects.unread().count() == 2
