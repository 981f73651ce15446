"""Browser journey for models (issue 4, "Done when"), with a real Celery worker:

- a scientist imports a skops model through the wizard, linked to a profiled training dataset, and lands on
  the model's page once the worker has imported it; then imports a benign pickle with no training data or
  input example, which the sandbox converts but cannot check, so it stays quarantined;
- a viewer tries a prediction on the skops model's card (the generated Try-it form) and sees no trust or
  archive buttons, on that card or on the quarantined one;
- a project admin who did not upload the pickle trusts it; the import job runs again and stores it as-is, and
  the audit trail shows the `model.trust` event.

Every page (and the wizard's and card's htmx updates) is checked with axe-core.
"""

from __future__ import annotations

import pickle
import re
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from apps.datasets import services as dataset_services
from apps.datasets.models import DatasetVersion
from apps.registry.models import ModelVersion
from tests.registry.conftest import fitted_tree, skops_bytes, training_frame

pytestmark = pytest.mark.e2e


def field(page, label: str):
    """A form field by the start of its label (required fields' labels end with a marker)."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}(\s|\*|$)"))


def _profiled_training_data(people, project) -> DatasetVersion:
    """A training dataset version, profiled by the real worker (the lineage step lists only ready ones)."""
    version, _ = dataset_services.upload(
        project, actor=people["scientist"], name="churn-training",
        uploaded=SimpleUploadedFile("train.csv", training_frame().to_csv(index=False).encode()))
    deadline = time.monotonic() + 90
    while version.status == DatasetVersion.Status.PROFILING and time.monotonic() < deadline:
        time.sleep(0.5)
        version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY, version.error
    return version


def test_import_try_and_trust_journey(portal, people, project, celery_worker_process, tmp_path):
    page = portal.page
    model_file = tmp_path / "churn-tree.skops"
    model_file.write_bytes(skops_bytes())
    training = _profiled_training_data(people, project)

    portal.log_in("scientist")
    portal.visit("/projects/alpha/models/")
    portal.click_to_page(page.get_by_role("link", name="Import a model"))
    portal.click_to_page(page.get_by_role("button", name="Start a new import"))
    stepper = page.get_by_role("navigation", name="Import steps")
    expect(stepper.locator('[aria-current="step"]')).to_contain_text("Source")

    portal.click_to_page(page.get_by_role("button", name="Upload a file"))
    expect(stepper.locator('[aria-current="step"]')).to_contain_text("File")
    # A file that is not a model is refused next to the field, and the form stays usable.
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello, I am not a model")
    field(page, "Model file").set_input_files(str(not_a_model))
    page.get_by_role("button", name="Next").click()
    expect(page.locator("#id_file_error")).to_contain_text("cannot tell what kind of model")
    portal.check_a11y()

    field(page, "Model file").set_input_files(str(model_file))
    field(page, "Format").select_option("skops")
    with page.expect_navigation(url=re.compile(r"/describe/$")):
        page.get_by_role("button", name="Next").click()
    portal.check_a11y()

    field(page, "New model name").fill("Churn")
    field(page, "Description").fill("Predicts which customers leave next quarter.")
    field(page, "Intended use").fill("Prioritising retention calls.")
    field(page, "Out-of-scope uses").fill("Credit or pricing decisions.")
    field(page, "Owner").select_option("scientist")
    field(page, "Risk tier").select_option("high")
    portal.click_to_page(page.get_by_role("button", name="Next"))

    # Choosing the training dataset refreshes the target column's choices from its schema (htmx).
    expect(stepper.locator('[aria-current="step"]')).to_contain_text("Lineage")
    field(page, "Training dataset version").select_option(str(training.uuid))
    expect(field(page, "Target column").locator("option[value=churned]")).to_have_count(1)
    field(page, "Target column").select_option("churned")
    field(page, "Code repository URL").fill("https://git.example.org/team/churn")
    field(page, "Commit hash").fill("3f9c2ab")
    field(page, "Training parameters").fill('{"max_depth": "3"}')
    field(page, "Library versions").fill("scikit-learn\nskops")
    portal.check_a11y()
    portal.click_to_page(page.get_by_role("button", name="Next"))

    expect(page.get_by_role("heading", name="Review and import")).to_be_visible()
    expect(page.locator('[data-review="model"]')).to_contain_text("Churn — a new model")
    expect(page.locator('[data-review="dataset"]')).to_contain_text("churn-training v1")
    expect(page.locator("#pickle-warning")).to_have_count(0)
    # "Edit" goes back to a step and saving it returns to the review.
    portal.click_to_page(page.get_by_role("link", name="Edit the description"))
    expect(field(page, "Intended use")).to_have_value("Prioritising retention calls.")
    field(page, "Intended use").fill("Prioritising retention calls by the customer team.")
    portal.click_to_page(page.get_by_role("button", name="Save and review"))
    expect(page.get_by_text("Prioritising retention calls by the customer team.")).to_be_visible()

    portal.click_to_page(page.get_by_role("button", name="Import"))
    expect(page.get_by_role("heading", name="Importing Churn v1")).to_be_visible()
    # The real worker imports the model; the page polls the job and then offers the model.
    expect(page.get_by_text("is imported and ready")).to_be_visible(timeout=120_000)
    portal.check_a11y()
    version = ModelVersion.objects.get(model__name="Churn", number=1)
    assert version.status == "ready" and version.training_dataset_id == training.pk, version.error

    portal.click_to_page(page.get_by_role("link", name="Open the model"))
    assert re.search(r"/models/churn/$", page.url), page.url
    expect(page.get_by_role("heading", level=1)).to_contain_text("Churn")

    _scientist_imports_a_pickle(portal, tmp_path)
    _viewer_tries_the_model(portal)
    _admin_trusts_the_pickle(portal)


def _sign_out(portal, username: str) -> None:
    portal.page.get_by_role("button", name=username).click()
    portal.click_to_page(portal.page.get_by_role("button", name="Sign out"))


def _scientist_imports_a_pickle(portal, tmp_path) -> None:
    """A benign scikit-learn pickle with no training data or input example: converted in the sandbox, but its
    equivalence cannot be checked, so it stays quarantined."""
    page = portal.page
    pickle_file = tmp_path / "churn-tree.pkl"
    pickle_file.write_bytes(pickle.dumps(fitted_tree()))

    portal.visit("/projects/alpha/models/import/")
    portal.click_to_page(page.get_by_role("button", name="Start a new import"))
    portal.click_to_page(page.get_by_role("button", name="Upload a file"))
    field(page, "Model file").set_input_files(str(pickle_file))
    field(page, "Format").select_option("pickle")
    with page.expect_navigation(url=re.compile(r"/describe/$")):
        page.get_by_role("button", name="Next").click()
    portal.check_a11y()
    field(page, "New model name").fill("Churn pickle")
    field(page, "Description").fill("The same tree, as a pickle from an old notebook.")
    portal.click_to_page(page.get_by_role("button", name="Next"))
    expect(field(page, "Training dataset version")).to_have_value("")
    portal.click_to_page(page.get_by_role("button", name="Next"))  # no training data, no input example

    expect(page.locator("#pickle-warning")).to_contain_text("it will be quarantined")
    portal.click_to_page(page.get_by_role("button", name="Import"))
    expect(page.get_by_role("status").filter(has_text="is quarantined")).to_be_visible(timeout=120_000)
    portal.check_a11y()
    version = ModelVersion.objects.get(model__name="Churn pickle", number=1)
    assert version.status == "quarantined" and not version.is_servable, (version.status, version.error)

    portal.visit(f"/models/{version.model.slug}/v1/")
    banner = page.locator("#quarantine-banner")
    expect(banner).to_contain_text("cannot run until a project admin trusts it")
    expect(banner).to_contain_text("another project admin must trust it")
    expect(page.locator('[data-action="trust"]')).to_have_count(0)   # not by the uploader
    expect(page.locator("#try-it")).to_have_count(0)
    _sign_out(portal, "scientist")


def _viewer_tries_the_model(portal) -> None:
    page = portal.page
    portal.log_in("viewer")
    portal.visit("/models/churn/")
    portal.click_to_page(page.get_by_role("link", name="v1", exact=True))
    assert re.search(r"/models/churn/v1/$", page.url), page.url
    expect(page.locator('[data-action="archive"], [data-action="trust"]')).to_have_count(0)

    try_it = page.locator("#try-it")
    # One field per signature input, labelled with its name and type.
    expect(try_it.locator("input:not([type=hidden]), select")).to_have_count(3)
    for name, value in {"age": "25", "income": "41000", "tenure": "2"}.items():
        try_it.get_by_label(re.compile(rf"^{name}\b")).fill(value)
    try_it.get_by_role("button", name="Predict").click()   # htmx swaps the result in below the form
    result = page.locator("[data-try-result]")
    expect(result.locator("[data-prediction]")).to_have_text("1")
    contributions = result.locator("#contributions")
    expect(contributions.locator("caption")).to_contain_text("Top contributing features")
    expect(contributions.locator("tbody tr").first).to_be_visible()
    expect(contributions.locator("tbody th").first).to_have_text(re.compile(r"^(age|income|tenure)$"))
    portal.check_a11y()

    # The quarantined pickle: the viewer sees why it is quarantined, but cannot trust (or archive) it.
    portal.visit("/models/churn-pickle/v1/")
    expect(page.locator("#quarantine-banner")).to_be_visible()
    expect(page.locator('[data-action="archive"], [data-action="trust"]')).to_have_count(0)
    _sign_out(portal, "viewer")


def _admin_trusts_the_pickle(portal) -> None:
    page = portal.page
    version = ModelVersion.objects.get(model__slug="churn-pickle", number=1)
    portal.log_in("admin")
    portal.visit("/models/churn-pickle/v1/")
    banner = page.locator("#quarantine-banner")
    banner.get_by_label(re.compile("Why you trust this exact file")).fill("Read the notebook that wrote it.")
    portal.click_to_page(banner.get_by_role("button", name="Trust this file"))
    expect(page.get_by_text("You trusted this exact file")).to_be_visible()

    # The import job runs again on the real worker and stores the pickle as-is; the card shows its progress
    # and reloads itself when it ends.
    expect(page.locator(".job-progress")).to_have_count(0, timeout=120_000)
    portal.check_a11y()
    version.refresh_from_db()
    assert version.import_job.status == "succeeded" and version.is_servable and version.mlflow_model_uri, (
        version.import_job.status, version.import_job.error, version.status)
    expect(page.locator("#quarantine-banner h2")).to_contain_text("Quarantined file, trusted by admin")
    expect(page.locator('[data-action="trust"]')).to_have_count(0)

    portal.visit("/audit/?action=model.trust")
    row = page.locator("#audit-table tbody tr").filter(has_text="model.trust")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("admin")
    expect(row).to_contain_text("Read the notebook that wrote it.")
