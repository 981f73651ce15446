"""notify(): in-app notifications and e-mail for every app; marking them read. Re-exported by services.

Notifications are not audited: each one follows from an action that already wrote its audit event.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.models import Notification, Project

logger = logging.getLogger(__name__)


def is_portal_path(url: str) -> bool:
    """A same-site path such as /models/churn/v3/ (no scheme, no host, no //evil.example)."""
    return (isinstance(url, str) and url.startswith("/") and not url.startswith(("//", "/\\"))
            and url_has_allowed_host_and_scheme(url, allowed_hosts=set()))


def absolute_url(path: str) -> str:
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def notify(users: Iterable, *, kind: str, title: str, body: str, url: str, project: Project | None = None,
           email: bool = True) -> list[Notification]:
    """Tell each active user (once, however often they are listed) in the portal and, after commit, by e-mail.

    A mail that cannot be sent is logged and never fails the caller; users without an address get the in-app
    notification only.
    """
    if not is_portal_path(url):
        raise ValueError(f"A notification links to a path in the portal, not {url!r}.")
    title = re.sub(r"\s+", " ", title).strip()[:200]  # also a mail subject: one line
    recipients = {user.pk: user for user in users if user is not None and user.is_active}
    if not recipients:
        return []
    with transaction.atomic():
        created = Notification.objects.bulk_create([
            Notification(recipient=user, project=project, kind=kind[:64], title=title, body=body, url=url)
            for user in recipients.values()])
    addresses = [user.email for user in recipients.values() if user.email]
    if email and addresses:
        transaction.on_commit(lambda: _send_mails(addresses, title=title, body=body, url=url))
    return created


def _send_mails(addresses: list[str], *, title: str, body: str, url: str) -> None:
    text = f"{body.rstrip()}\n\nOpen it in the portal: {absolute_url(url)}\n"
    for address in addresses:  # one mail each: recipients do not see who else was told
        try:
            EmailMessage(subject=title, body=text, to=[address]).send()
        except Exception:  # any transport error: the notification is in the portal anyway
            logger.exception("Could not e-mail the notification %r to %s", title, address)


def mark_read(notification: Notification, *, actor) -> bool:
    """Mark one of the actor's notifications read; False if it was already read (or is not theirs)."""
    return bool(Notification.objects.filter(pk=notification.pk, recipient=actor, read_at__isnull=True)
                .update(read_at=timezone.now()))


def mark_all_read(*, actor, project_id: int | None = None) -> int:
    """Mark the actor's unread notifications read (only one project's, for a project-scoped token)."""
    unread = Notification.objects.filter(recipient=actor, read_at__isnull=True)
    if project_id is not None:
        unread = unread.filter(project_id=project_id)
    return unread.update(read_at=timezone.now())
