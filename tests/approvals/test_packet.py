"""The audit packet: every decision with its comment and time, the audit events with the chain's verdict,
members only, contributed sections in order, self-contained HTML, audited, and no personal data values."""

from __future__ import annotations

import re

import pytest

from apps.approvals import packet, services
from apps.audit.models import AuditEvent
from apps.datasets.models import Dataset, DatasetVersion
from apps.registry.models import ModelValidation, ModelVersion
from tests.approvals.conftest import ANSWERS
from tests.audit.conftest import dba_cursor

pytestmark = pytest.mark.django_db

PII_VALUES = ("alice@example.org", "bob@example.org", "carol@example.org")


def page_url(version: ModelVersion, suffix: str = "") -> str:
    return f"/models/{version.model.slug}/v{version.number}/audit-packet/{suffix}"


def api_url(version: ModelVersion) -> str:
    return f"/api/v1/model-versions/{version.uuid}/audit-packet/"


@pytest.fixture
def approved(people, version, production, approver2):
    """A production request by the scientist, approved by two approvers with comments."""
    request = services.request_approval(version, production, actor=people["scientist"],
                                        justification="Beats the rules engine by 12 points.", answers=ANSWERS)
    services.decide(request, actor=people["approver"], verdict="approve", comment="Metrics look sound.")
    services.decide(request, actor=approver2, verdict="approve", comment="Fallback plan is adequate.")
    request.refresh_from_db()
    assert request.status == "approved"
    return request


@pytest.fixture
def pii_training(people, project, version):
    """Training data with an e-mail column flagged as personal data, and a validation quoting its values."""
    dataset = Dataset.objects.create(project=project, name="customers", created_by=people["scientist"])
    data = DatasetVersion.objects.create(
        dataset=dataset, number=1, file_name="x.csv", original_filename="customers.csv", format="csv",
        size_bytes=10, sha256="c" * 64, status="ready", row_count=3, column_count=2,
        profile={"row_count": 3, "column_count": 2, "warnings": [{"message": "email looks like personal data"}],
                 "columns": [
                     {"name": "email", "type": "categorical", "pii": {"kind": "email"}, "distinct": 3,
                      "top_values": [{"value": v, "count": 1} for v in PII_VALUES]},
                     {"name": "age", "type": "numeric", "numeric": {"min": 18, "max": 77}},
                 ]})
    ModelVersion.objects.filter(pk=version.pk).update(training_dataset=data)
    ModelValidation.objects.create(
        model_version=version, dataset_version=data, verdict="warn", created_by=people["scientist"],
        report={"verdict": "warn", "summary": "1 thing(s) to check, e.g. `email` has categories not in the "
                "reference: bob@example.org.",
                "findings": [{"column": "email", "kind": "unseen_categories", "severity": "warn",
                              "message": "`email` has categories not in the reference: bob@example.org.",
                              "details": {"unseen": ["bob@example.org"]}},
                             {"column": "age", "kind": "out_of_range", "severity": "warn",
                              "message": "`age` has values from 18 to 90, outside the reference range.",
                              "details": {}}]})
    version.refresh_from_db()
    return data


def test_packet_lists_every_decision_with_comment_time_requester_and_checklist(people, version, approved,
                                                                               client_as):
    response = client_as(people["approver"]).get(page_url(version))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert response["Content-Disposition"] == 'attachment; filename="churn-v1-audit-packet.html"'
    html = response.content.decode()
    assert html.startswith("<!doctype html>") and "How to read this packet" in html

    block = html[html.index('data-section="approvals"'):html.index('data-section="audit"')]
    assert "production: Approved" in block and "scientist" in block
    assert "Beats the rules engine by 12 points." in block
    assert "What happens if the model is switched off or wrong?" in block and "Agents call everyone" in block
    for decision in approved.decisions.all():
        row = re.search(rf'<tr data-verdict="approve"><th scope="row">{decision.approver.username}</th>.*?</tr>',
                        block, re.S)
        assert row, f"no row for {decision.approver}"
        assert decision.comment in row.group(0)
        iso = decision.created_at.isoformat(timespec="seconds")
        assert f'datetime="{iso}"' in row.group(0)
        assert decision.created_at.strftime("%B %Y") in row.group(0)  # in words too
    assert "Metrics look sound." in block and "Fallback plan is adequate." in block
    # The checklist as recorded with the request, missing items shown, not hidden.
    assert "Evidence checklist" in block and "Purpose and intended use written" in block
    assert "Training data linked" in block and "Missing" in block
    assert "2 of 2 approvals" in block and "Approval valid until" in block

    # The table of contents lists the sections in order.
    toc = html[html.index('id="toc-heading"'):html.index("</nav>")]
    assert re.findall(r'href="#section-([\w-]+)"', toc) == [
        "card", "lineage", "validation", "baselines", "approvals", "audit"]


def test_packet_lists_the_models_audit_events_and_an_intact_chain(people, version, approved, client_as):
    client = client_as(people["approver"])  # signing in is an event too
    events = AuditEvent.objects.count()  # the export's own event is recorded after the check
    html = client.get(page_url(version, "?inline=1")).content.decode()
    block = html[html.index('data-section="audit"'):]
    assert 'data-chain="intact"' in block
    assert f"The audit trail is intact: {events} events checked." in block
    for action in ("approval.request", "approval.decision", "approval.approved"):
        assert f"<code>{action}</code>" in block
    assert "Approver decided" in block  # actions in words as well as codes
    assert "environment.create" not in block  # events about other objects are not listed


def test_a_tampered_chain_shows_where_it_breaks(people, version, approved, client_as):
    decision_event = AuditEvent.objects.filter(action="approval.decision").order_by("sequence").first()
    with dba_cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET actor_label = %s WHERE sequence = %s",
                       ["someone-else", decision_event.sequence])
    html = client_as(people["approver"]).get(page_url(version)).content.decode()
    block = html[html.index('data-section="audit"'):]
    assert 'data-chain="broken"' in block and "intact" not in block
    assert f"The audit trail is broken at event #{decision_event.sequence}: event content does not match its " \
           "hash." in block
    assert f'<tr data-sequence="{decision_event.sequence}" class="after-break">' in block


def test_viewer_downloads_and_outsider_gets_404_on_page_and_api(people, version, approved, client_as, api_as):
    viewer = client_as(people["viewer"]).get(page_url(version))
    assert viewer.status_code == 200 and "attachment" in viewer["Content-Disposition"]
    inline = client_as(people["viewer"]).get(page_url(version, "?inline=1"))
    assert inline["Content-Disposition"].startswith("inline;")
    # A viewer's packet follows the audit page's rule: their own actions only, no chain check.
    assert "does not include reading its audit trail" in viewer.content.decode()

    api = api_as(people["viewer"]).get(api_url(version))
    assert api.status_code == 200 and api["Content-Type"].startswith("text/html")
    assert b"Audit packet: Churn, version 1" in api.content and b"Metrics look sound." in api.content
    api_html = api_as(people["viewer"]).get(api_url(version), HTTP_ACCEPT="text/html")
    assert api_html.status_code == 200

    assert client_as(people["outsider"]).get(page_url(version)).status_code == 404
    assert api_as(people["outsider"]).get(api_url(version)).status_code == 404
    # A token scoped to another project sees nothing either.
    assert api_as(people["outsider"], project=people["outsider"].memberships.first().project).get(
        api_url(version)).status_code == 404
    assert not AuditEvent.objects.filter(action="audit.packet_export", actor=people["outsider"]).exists()


def test_a_registered_section_appears_in_its_place_and_an_empty_one_is_left_out(people, version, approved,
                                                                                 client_as):
    def history(v, user):
        return {"intro": f"Where v{v.number} ran.", "facts": [("Seen by", user.username)],
                "tables": [{"caption": "Deployments", "columns": ["Environment", "Since"],
                            "rows": [["production", packet.when(approved.decided_at)]]}]}

    # Keys of their own: the real apps register "deployments" and "monitoring" (a version never deployed has
    # nothing in the real "deployments" section, which is then left out).
    packet.register_section("example-history", "Deployment history", packet.ORDER_DEPLOYMENTS + 1, history)
    packet.register_section("example-empty", "Monitoring summary", packet.ORDER_MONITORING + 1, lambda v, u: None)
    try:
        html = client_as(people["viewer"]).get(page_url(version)).content.decode()
    finally:
        packet.unregister_section("example-history")
        packet.unregister_section("example-empty")
    order = re.findall(r'data-section="([\w-]+)"', html)
    assert order == ["card", "lineage", "validation", "baselines", "approvals", "example-history", "audit"]
    block = html[html.index('data-section="example-history"'):html.index('data-section="audit"')]
    assert "7. Audit trail" in html and "6. Deployment history" in block
    assert "Where v1 ran." in block and "viewer" in block
    assert f'datetime="{approved.decided_at.isoformat(timespec="seconds")}"' in block
    assert "Monitoring summary" not in html
    assert "example-history" not in [s.key for s in packet.registered_sections()]
    assert "deployments" in [s.key for s in packet.registered_sections()]  # the real one is untouched


def test_a_failing_section_does_not_stop_the_packet(people, version, client_as):
    def broken(v, user):
        raise RuntimeError("boom")

    packet.register_section("broken", "Broken part", 55, broken)
    try:
        response = client_as(people["viewer"]).get(page_url(version))
    finally:
        packet.unregister_section("broken")
    html = response.content.decode()
    assert response.status_code == 200 and "could not be assembled" in html and "boom" not in html


def test_packet_is_self_contained(people, version, approved, client_as):
    ModelVersion.objects.filter(pk=version.pk).update(
        code_repository="https://git.example.org/churn", explainability={
            "rows": 50, "metric": "accuracy", "features": [{"name": "age<script>", "importance": 0.3, "std": 0.01}]})
    html = client_as(people["approver"]).get(page_url(version)).content.decode()
    assert "<style>" in html and "<svg" in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "age&lt;script&gt;" in html
    assert "https://git.example.org/churn" in html  # recorded as text, not linked
    assert "@media print" in html and "break-before: page" in html


def test_export_is_audited(people, version, client_as, api_as):
    client_as(people["viewer"]).get(page_url(version))
    api_as(people["approver"]).get(api_url(version))
    events = list(AuditEvent.objects.filter(action="audit.packet_export").order_by("sequence"))
    assert [(e.actor, e.object_type, e.object_id, e.details["via"]) for e in events] == [
        (people["viewer"], "registry.modelversion", str(version.uuid), "page"),
        (people["approver"], "registry.modelversion", str(version.uuid), "api"),
    ]
    assert events[0].project == version.model.project and events[0].details["version"] == 1
    assert events[0].details["sections"][0] == "card"


def test_pii_column_values_never_appear(people, version, pii_training, production, client_as):
    services.request_approval(version, production, actor=people["scientist"], justification="Ready.",
                              answers=ANSWERS, validation=version.validations.get())
    # The approver may see PII on the dataset pages; the packet still carries counts only.
    for user in (people["approver"], people["viewer"], people["admin"]):
        html = client_as(user).get(page_url(version)).content.decode()
        for value in PII_VALUES:
            assert value not in html, f"{value} leaked into {user}'s packet"
        lineage = html[html.index('data-section="lineage"'):html.index('data-section="validation"')]
        assert "customers v1" in lineage and "3 rows, 2 columns" in lineage
        assert "1 column flagged as personal data" in lineage
        validation = html[html.index('data-section="validation"'):html.index('data-section="approvals"')]
        assert "1 finding about columns flagged as personal data withheld" in validation
        assert "`age` has values from 18 to 90" in validation
        assert "used as evidence for an approval" in validation


def test_build_packet_refuses_outsiders(people, version):
    from django.http import Http404

    with pytest.raises(Http404):
        packet.build_packet(version, user=people["outsider"])
    assert not AuditEvent.objects.filter(action="audit.packet_export").exists()


def test_the_model_card_links_to_the_packet(people, version, client_as):
    html = client_as(people["viewer"]).get(f"/models/{version.model.slug}/v{version.number}/").content.decode()
    assert f'href="{page_url(version)}" download>Audit packet</a>' in html
