"""The periodic verification task stays quiet on an intact chain and mails the operators when it breaks."""

from __future__ import annotations

import pytest

from apps.audit.tasks import verify_audit_chain_task
from tests.audit.conftest import dba_cursor


@pytest.fixture
def operators(settings):
    settings.ADMINS = [("Portal operators", "ops@example.org")]
    settings.EMAIL_SUBJECT_PREFIX = "[Portal] "


def test_intact_chain_sends_no_mail(chain_of_five, operators, mailoutbox):
    result = verify_audit_chain_task()

    assert result == {"ok": True, "events": 5, "first_bad": None, "reason": ""}
    assert mailoutbox == []


def test_broken_chain_mails_the_operators_naming_the_event(chain_of_five, operators, mailoutbox):
    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_label = 'mallory' WHERE sequence = 4")

    result = verify_audit_chain_task()

    assert (result["ok"], result["first_bad"]) == (False, 4)
    [mail] = mailoutbox
    assert mail.to == ["ops@example.org"]
    assert mail.subject == "[Portal] Audit chain verification failed"
    assert "broken at event #4" in mail.body
    assert "does not match its hash" in mail.body


def test_task_result_is_json_serialisable_for_the_result_backend(chain_of_five):
    import json

    assert json.loads(json.dumps(verify_audit_chain_task()))["events"] == 5
