"""The model card page: who sees what, Try-it through htmx, the evidence buttons, and the standalone export."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.core.models import Job
from apps.registry import evidence
from apps.registry.models import ModelVersion
from tests.registry.test_evidence import YOUNG_NEW, run_job, trained_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(people, project, django_capture_on_commit_callbacks):
    evidence.clear_cache()
    return trained_version(people, project, django_capture_on_commit_callbacks,
                           intended_use="Call customers likely to leave.", risk_tier="high")


def card_url(version: ModelVersion, suffix: str = "") -> str:
    return f"/models/{version.model.slug}/v{version.number}/{suffix}"


def test_viewer_sees_the_card_with_a_try_it_form(people, version, client_as):
    response = client_as(people["viewer"]).get(card_url(version))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Call customers likely to leave." in html and 'data-risk="high"' in html
    assert 'id="try-it"' in html
    # One labelled field per signature input; numbers get the training range as a hint.
    for index, name in enumerate(["age", "income", "tenure"]):
        assert f'<label class="form-label" for="try-{index}">{name}' in html
    assert re.search(r'id="try-0"[^>]*type="number"[^>]*step="1"', html)
    assert re.search(r'Training range 18 – 7\d', html)
    assert "churn-training v1" in html and 'data-stat="rows">200<' in html
    assert 'id="signature-table"' in html and "Export model card (HTML)" in html
    assert 'id="deployments-heading"' in html  # the deployments app's section on the card


def test_viewer_cannot_see_trust_archive_or_job_buttons(people, version, client_as):
    html = client_as(people["viewer"]).get(card_url(version)).content.decode()
    for marker in ('data-action="archive"', 'data-action="trust"', "Compute feature importance",
                   "Check whether ONNX is faster", 'id="validate-dataset"'):
        assert marker not in html
    admin_html = client_as(people["admin"]).get(card_url(version)).content.decode()
    assert 'data-action="archive"' in admin_html and "Compute feature importance" in admin_html


def test_outsider_gets_404_and_viewer_403_on_actions(people, version, client_as):
    assert client_as(people["outsider"]).get(card_url(version)).status_code == 404
    assert client_as(people["outsider"]).post(card_url(version, "try/"), YOUNG_NEW).status_code == 404
    viewer = client_as(people["viewer"])
    assert viewer.post(card_url(version, "explain/")).status_code == 403
    assert viewer.post(card_url(version, "archive/")).status_code == 403
    assert viewer.post(card_url(version, "optimise/")).status_code == 403


def test_try_it_through_htmx_returns_the_result_fragment(people, version, client_as):
    client = client_as(people["viewer"])
    response = client.post(card_url(version, "try/"), YOUNG_NEW, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html and "data-try-result" in html
    assert re.search(r"data-prediction>1<", html) and 'id="contributions"' in html
    errors = client.post(card_url(version, "try/"), {**YOUNG_NEW, "age": "very old"}, HTTP_HX_REQUEST="true")
    assert 'data-field="age"' in errors.content.decode() and "not a whole number" in errors.content.decode()
    assert 'href="#try-0"' in errors.content.decode(), "each error links to its field"
    without_js = client.post(card_url(version, "try/"), YOUNG_NEW)
    assert without_js.status_code == 200 and "data-try-result" in without_js.content.decode()


def test_quarantined_version_shows_the_banner_and_trust_button_for_another_admin(people, version, client_as):
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.QUARANTINED, safety={"verdict": "flagged", "summary": "It imports os.system."})
    html = client_as(people["viewer"]).get(card_url(version)).content.decode()
    assert 'id="quarantine-banner"' in html and "It imports os.system." in html
    assert 'id="try-it"' not in html and 'data-action="trust"' not in html
    assert 'data-action="trust"' in client_as(people["admin"]).get(card_url(version)).content.decode()


def test_archive_and_restore_from_the_card(people, version, client_as):
    admin = client_as(people["admin"])
    assert admin.post(card_url(version, "archive/")).status_code == 302
    version.refresh_from_db()
    assert version.status == "archived"
    admin.post(card_url(version, "restore/"))
    version.refresh_from_db()
    assert version.status == "ready"
    assert AuditEvent.objects.filter(action__in=["model.archive", "model.restore"]).count() == 2


def test_explain_button_queues_a_job_and_the_card_shows_the_chart(people, version, client_as,
                                                                  django_capture_on_commit_callbacks):
    client = client_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        assert client.post(card_url(version, "explain/")).status_code == 302
    html = client.get(card_url(version)).content.decode()
    match = re.search(r'hx-get="(/models/[^"]+/jobs/[0-9a-f-]+/)"', html)
    assert match, "a progress bar polls the job"
    job = Job.objects.get(kind="explain_model", params__version=str(version.uuid))
    run_job(job, evidence.explain_version)
    finished = client.get(match.group(1), HTTP_HX_REQUEST="true")
    assert finished.status_code == 204 and finished["HX-Refresh"] == "true"
    html = client.get(card_url(version)).content.decode()
    assert 'id="importance-chart"' in html and 'id="importance-table"' in html


def test_validate_form_on_the_card(people, version, client_as, django_capture_on_commit_callbacks):
    client = client_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        client.post(card_url(version, "validate/"), {"dataset_version": str(version.training_dataset.uuid)})
    validation = version.validations.get()
    run_job(validation.job, evidence.validate_version)
    html = client.get(card_url(version)).content.decode()
    assert 'data-verdict="pass"' in html


def test_export_is_standalone_html(people, version, client_as, api_as):
    response = client_as(people["viewer"]).get(card_url(version, "card.html"))
    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"] and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert html.startswith("<!doctype html>") and "<style>" in html
    assert "<script" not in html and "<link" not in html and 'src="' not in html and "http://" not in html.lower() \
        .replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "Call customers likely to leave." in html and "churn-training v1" in html
    api = api_as(people["viewer"]).get(f"/api/v1/model-versions/{version.uuid}/card.html")
    assert api.status_code == 200 and b"Model card" in api.content
    assert api_as(people["outsider"]).get(f"/api/v1/model-versions/{version.uuid}/card.html").status_code == 404


def test_export_draws_feature_importance_as_inline_svg(people, version, client_as):
    ModelVersion.objects.filter(pk=version.pk).update(explainability={
        "method": "permutation_importance", "rows": 200, "metric": "accuracy", "computed_at": "2026-01-01T10:00",
        "features": [{"name": "age<script>", "importance": 0.3, "std": 0.01}]})
    html = client_as(people["viewer"]).get(card_url(version, "card.html")).content.decode()
    assert "<svg" in html and "age&lt;script&gt;" in html and "<script>" not in html
