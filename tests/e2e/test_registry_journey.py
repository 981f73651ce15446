"""Browser journey for models: a scientist imports a skops model through the wizard, linked to a profiled
training dataset, and lands on the model's page once the real Celery worker has imported it.

Every page (and the wizard's htmx updates) is checked with axe-core.
"""

from __future__ import annotations

import re
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from playwright.sync_api import expect

from apps.datasets import services as dataset_services
from apps.datasets.models import DatasetVersion
from apps.registry.models import ModelVersion
from tests.registry.conftest import skops_bytes, training_frame

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


def test_scientist_imports_a_skops_model_through_the_wizard(portal, people, project, celery_worker_process,
                                                            tmp_path):
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

    # TODO(issue 4, "Done when"), two steps to add here once the model card is committed and passes axe:
    # - viewer: sign out, log in as "viewer", open /models/churn/ → link "v1", fill #try-it's age/income/tenure
    #   (25, 41000, 2), click "Predict", expect [data-prediction] to have text "1". Tried against the card in the
    #   working tree: axe fails the card page on opening it (color-contrast on ".small > code").
    # - admin: a scientist imports a pickle through this wizard (quarantined), "admin" clicks "Trust this file".
    #   Blocked: apps/registry/safety.py (the pickle scan and sandbox import_version calls) does not exist yet.
