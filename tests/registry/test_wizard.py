"""The import wizard over HTTP: every step, resuming, errors kept next to their fields, bad files, access."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.datasets import services as dataset_services
from apps.registry.models import ImportDraft, ModelVersion, RegisteredModel
from tests.datasets.conftest import run_profiling
from tests.registry.conftest import run_import, skops_bytes, training_frame, upload

pytestmark = pytest.mark.django_db

START = "/projects/alpha/models/import/"
DESCRIBE = {"model": "", "name": "Churn", "description": "Who will leave next quarter.",
            "intended_use": "Retention campaigns.", "out_of_scope_uses": "Credit decisions.",
            "owner": "scientist", "task_type": "classification", "risk_tier": "high"}


def step_url(draft: ImportDraft, step: str) -> str:
    return reverse("model-import-step", args=[draft.uuid, step])


def incoming_files(settings) -> list[Path]:
    folder = Path(settings.MEDIA_ROOT) / "models/incoming"
    return sorted(folder.iterdir()) if folder.exists() else []


def start_draft(client) -> ImportDraft:
    response = client.post(START)
    draft = ImportDraft.objects.latest("created_at")
    assert response.status_code == 302 and response["Location"] == step_url(draft, "source")
    assert client.post(step_url(draft, "source"))["Location"] == step_url(draft, "file")
    return draft


def upload_model(client, draft, name: str = "tree.skops", content: bytes | None = None, fmt: str = ""):
    content = skops_bytes() if content is None else content
    return client.post(step_url(draft, "file"), {"file": upload(name, content), "format": fmt})


@pytest.fixture
def scientist(people, client_as):
    return client_as(people["scientist"])


@pytest.fixture
def training_version(people, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        version, _ = dataset_services.upload(
            project, actor=people["scientist"], name="churn-training",
            uploaded=SimpleUploadedFile("train.csv", training_frame().to_csv(index=False).encode()))
    return run_profiling(version)


def test_happy_path_imports_a_skops_model_and_shows_the_job(scientist, training_version, settings,
                                                            django_capture_on_commit_callbacks):
    draft = start_draft(scientist)
    page = scientist.get(step_url(draft, "file"))
    assert b'aria-current="step"' in page.content and b"Detect automatically" in page.content

    response = upload_model(scientist, draft)
    assert response.status_code == 302 and response["Location"] == step_url(draft, "describe")
    draft.refresh_from_db()
    assert draft.data["file"]["detected"] == "skops" and draft.sha256 and len(incoming_files(settings)) == 1

    assert scientist.post(step_url(draft, "describe"), DESCRIBE)["Location"] == step_url(draft, "lineage")
    lineage_page = scientist.get(step_url(draft, "lineage"), {"training_dataset": str(training_version.uuid)})
    assert b'<option value="churned">churned</option>' in lineage_page.content  # the htmx refresh's content
    response = scientist.post(step_url(draft, "lineage"), {
        "training_dataset": str(training_version.uuid), "target_column": "churned",
        "code_repository": "https://git.example.org/team/churn", "code_commit": "3F9C2AB",
        "params": '{"max_depth": 3}', "metrics": '{"accuracy": 0.93}',
        "requirements": "scikit-learn\nskops", "input_example": ""})
    assert response["Location"] == step_url(draft, "review")

    review = scientist.get(step_url(draft, "review")).content.decode()
    assert "Churn" in review and "tree.skops" in review and "churn-training v1" in review
    assert "quarantined" not in review and 'aria-current="step"' in review
    assert review.count("?then=review") >= 3  # an Edit link per section

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = scientist.post(step_url(draft, "review"))
    assert response.status_code == 302 and response["Location"] == step_url(draft, "done")
    assert len(queued) == 1
    draft.refresh_from_db()
    version = draft.version
    assert draft.step == "done" and version.number == 1 and version.file_name == draft.file_name
    model = version.model
    assert (model.name, model.risk_tier, model.owner.username) == ("Churn", "high", "scientist")
    assert (version.code_commit, version.metrics, version.training_dataset_id) == (
        "3f9c2ab", {"accuracy": 0.93}, training_version.pk)
    assert version.tags == {"target_column": "churned"}

    polling = scientist.get(f"{step_url(draft, 'done')}?status=1", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" in polling and "progress" in polling
    run_import(version)
    assert version.status == "ready", version.error
    finished = scientist.get(f"{step_url(draft, 'done')}?status=1", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in finished and "is imported and ready" in finished
    # An imported draft no longer edits: its steps lead to the result.
    assert scientist.get(step_url(draft, "describe"))["Location"] == step_url(draft, "done")
    assert draft not in ImportDraft.objects.exclude(step="done")


def test_leaving_and_coming_back_resumes_at_the_draft_step_with_its_values(scientist):
    draft = start_draft(scientist)
    upload_model(scientist, draft)
    scientist.post(step_url(draft, "describe"), {**DESCRIBE, "action": "back"})  # "Back" keeps what was typed

    listing = scientist.get(START).content.decode()
    assert step_url(draft, "describe") in listing and "tree.skops" in listing
    assert scientist.get(step_url(draft, "review"))["Location"] == step_url(draft, "describe")
    page = scientist.get(step_url(draft, "describe")).content.decode()
    assert 'value="Churn"' in page and "Retention campaigns." in page
    # Back on the file step keeps the uploaded file: going on needs no new upload.
    assert scientist.post(step_url(draft, "file"), {"format": ""})["Location"] == step_url(draft, "describe")


def test_reupload_replaces_the_file_and_deletes_the_old_one(scientist, settings, django_capture_on_commit_callbacks):
    draft = start_draft(scientist)
    upload_model(scientist, draft, name="first.skops")
    first = incoming_files(settings)
    with django_capture_on_commit_callbacks(execute=True):
        upload_model(scientist, draft, name="second.skops")
    draft.refresh_from_db()
    assert draft.original_filename == "second.skops"
    assert incoming_files(settings) != first and len(incoming_files(settings)) == 1


@pytest.mark.parametrize(("name", "content", "fmt", "message"), [
    ("notes.txt", b"hello, I am not a model", "", "cannot tell"),
    ("empty.skops", b"", "", "empty"),
    ("tree.skops", None, "onnx", "its content is"),
])
def test_a_bad_file_is_a_file_field_error_and_nothing_is_kept(scientist, settings, name, content, fmt, message):
    draft = start_draft(scientist)
    response = upload_model(scientist, draft, name=name, content=content, fmt=fmt)
    assert response.status_code == 200
    assert message in response.context["form"].errors["file"][0]
    assert 'id="id_file_error"' in response.content.decode()
    assert incoming_files(settings) == []
    draft.refresh_from_db()
    assert draft.file_name == "" and draft.step == "file"


def test_htmx_upload_answers_the_form_on_error_and_a_redirect_on_success(scientist):
    draft = start_draft(scientist)
    bad = scientist.post(step_url(draft, "file"), {"file": upload("x.txt", b"nope"), "format": ""},
                         HTTP_HX_REQUEST="true")
    assert bad.status_code == 200 and b"<form" in bad.content and b"<html" not in bad.content
    good = scientist.post(step_url(draft, "file"), {"file": upload("t.skops", skops_bytes()), "format": "skops"},
                          HTTP_HX_REQUEST="true")
    assert good.status_code == 204 and good["HX-Redirect"] == step_url(draft, "describe")


def test_each_step_shows_its_errors_next_to_the_fields_and_keeps_the_values(scientist, people):
    draft = start_draft(scientist)
    missing = scientist.post(step_url(draft, "file"), {"format": ""})
    assert "Choose a model file" in missing.context["form"].errors["file"][0]
    upload_model(scientist, draft)

    response = scientist.post(step_url(draft, "describe"), {**DESCRIBE, "name": "", "owner": "outsider",
                                                            "risk_tier": "extreme"})
    errors = response.context["form"].errors
    assert {"name", "owner", "risk_tier"} <= set(errors)
    assert "Retention campaigns." in response.content.decode() and 'aria-invalid="true"' in response.content.decode()
    RegisteredModel.objects.create(project=draft.project, name="Churn", slug="churn")
    taken = scientist.post(step_url(draft, "describe"), DESCRIBE)
    assert "already has a model" in taken.context["form"].errors["name"][0]
    assert scientist.post(step_url(draft, "describe"), {**DESCRIBE, "model": "churn", "name": ""}).status_code == 302

    response = scientist.post(step_url(draft, "lineage"), {
        "code_repository": "not a url", "code_commit": "xyz", "params": "{", "metrics": '{"auc": "high"}',
        "input_example": "42"})
    errors = response.context["form"].errors
    assert {"code_repository", "code_commit", "params", "metrics", "input_example"} <= set(errors)
    assert "not a url" in response.content.decode()
    draft.refresh_from_db()
    assert draft.step == "lineage"


def test_review_of_an_existing_model_and_of_a_pickle(scientist, people):
    RegisteredModel.objects.create(project=people["scientist"].memberships.get().project, name="Churn", slug="churn")
    draft = start_draft(scientist)
    upload_model(scientist, draft, name="model.pkl", content=b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")
    scientist.post(step_url(draft, "describe"), {**DESCRIBE, "model": "churn", "name": ""})
    scientist.post(step_url(draft, "lineage"), {})
    review = scientist.get(step_url(draft, "review")).content.decode()
    assert "it will be quarantined and converted in a sandbox; an admin must trust it to serve it as-is" in review
    assert "a new version (v1) of the existing model" in review


def test_discarding_a_draft_deletes_its_file(scientist, settings, django_capture_on_commit_callbacks):
    draft = start_draft(scientist)
    upload_model(scientist, draft)
    with django_capture_on_commit_callbacks(execute=True):
        response = scientist.post(reverse("model-import-discard", args=[draft.uuid]))
    assert response["Location"] == START
    assert not ImportDraft.objects.exists() and incoming_files(settings) == []


def test_viewers_get_403_outsiders_404_and_other_peoples_drafts_404(people, client_as, scientist):
    draft = start_draft(scientist)
    viewer, outsider, admin = (client_as(people[r]) for r in ("viewer", "outsider", "admin"))
    assert viewer.get(START).status_code == 403
    assert viewer.post(START).status_code == 403
    assert outsider.get(START).status_code == 404
    for step in ("source", "file", "describe", "review", "done"):
        assert admin.get(step_url(draft, step)).status_code == 404
        assert outsider.get(step_url(draft, step)).status_code == 404
    assert admin.post(reverse("model-import-discard", args=[draft.uuid])).status_code == 404
    assert scientist.get(step_url(draft, "nonsense")).status_code == 404
    # A scientist demoted to viewer keeps seeing the project but may no longer import.
    people["scientist"].memberships.update(role="viewer")
    assert client_as(people["scientist"]).get(step_url(draft, "source")).status_code == 403
    assert not ModelVersion.objects.exists()


def test_import_a_new_version_from_a_model_page_starts_from_that_model(scientist, people, project):
    RegisteredModel.objects.create(project=project, name="Churn", slug="churn", description="Old words.",
                                   risk_tier="low")
    assert "new version of Churn" in scientist.get(f"{START}?model=churn").content.decode()
    scientist.post(f"{START}?model=churn")
    draft = ImportDraft.objects.get()
    scientist.post(step_url(draft, "source"))
    upload_model(scientist, draft)
    page = scientist.get(step_url(draft, "describe")).content.decode()
    assert '<option value="churn" selected>' in page and "Old words." in page
