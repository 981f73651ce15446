"""The model card's evidence: try-it, feature importance, validation and the ONNX hint, on real models."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEvent
from apps.core.models import Job
from apps.datasets import services as dataset_services
from apps.registry import evidence, services
from apps.registry.models import ModelValidation, ModelVersion
from tests.datasets.conftest import run_profiling
from tests.registry.conftest import run_import, skops_bytes, training_frame, upload

pytestmark = pytest.mark.django_db


def profiled_training_data(project, actor, capture, frame=None, name="churn-training"):
    """The training frame uploaded as a CSV dataset and profiled in-process."""
    frame = training_frame() if frame is None else frame
    with capture(execute=False):
        version, _ = dataset_services.upload(project, actor=actor, name=name, uploaded=SimpleUploadedFile(
            f"{name}.csv", frame.to_csv(index=False).encode()))
    return run_profiling(version)


def trained_version(people, project, capture, **model_fields) -> ModelVersion:
    """A skops decision tree imported with its profiled training data and target column, ready to run."""
    data = profiled_training_data(project, people["scientist"], capture)
    with capture(execute=False):
        version = services.start_import(
            project, actor=people["scientist"], name="Churn", uploaded=upload("tree.skops", skops_bytes()),
            fmt="skops", lineage={"training_dataset": str(data.uuid), "target_column": "churned"},
            model_fields={"task_type": "classification", **model_fields},
        )
    version = run_import(version)
    assert version.status == "ready", version.error
    return version


def run_job(job: Job, work) -> Job:
    work(str(job.id))
    job.refresh_from_db()
    return job


@pytest.fixture
def version(people, project, django_capture_on_commit_callbacks):
    evidence.clear_cache()
    return trained_version(people, project, django_capture_on_commit_callbacks)


YOUNG_NEW = {"age": "25", "income": "41000.5", "tenure": "1"}


# --- Try it ---------------------------------------------------------------------------------------------------


def test_viewer_tries_a_prediction_and_sees_contributions(people, version):
    result = evidence.predict(version, actor=people["viewer"], inputs=YOUNG_NEW)
    assert result["prediction"] == 1  # young and new: the tree says they churn
    assert set(result["probabilities"]) == {"0", "1"} and result["probabilities"]["1"] > 0.5
    features = [c["feature"] for c in result["contributions"]]
    assert features and set(features) <= {"age", "income", "tenure"} and "age" in features
    assert all(c["effect"] > 0 for c in result["contributions"] if c["feature"] in {"age", "tenure"})
    assert AuditEvent.objects.filter(action="model.try", actor=people["viewer"]).exists()


def test_try_it_names_each_bad_field(people, version):
    with pytest.raises(ValidationError) as caught:
        evidence.predict(version, actor=people["viewer"], inputs={"age": "old", "income": "", "tenure": "1.5",
                                                                   "colour": "red"})
    errors = caught.value.message_dict
    assert "not a whole number" in errors["age"][0]
    assert "Enter a value" in errors["income"][0]
    assert "not a whole number" in errors["tenure"][0]
    assert "no input called" in errors["colour"][0]


def test_a_model_that_raises_gives_a_clear_error(people, version, monkeypatch):
    class Broken:
        def predict(self, frame):
            raise RuntimeError("boom inside the model")

        def get_raw_model(self):
            raise NotImplementedError

    monkeypatch.setattr("apps.registry.evidence.predictor.load_predictor", lambda v: Broken())
    with pytest.raises(evidence.PredictionFailed, match="could not predict.*boom inside the model"):
        evidence.predict(version, actor=people["viewer"], inputs=YOUNG_NEW)


def test_api_predict_answers_400_not_500_when_the_model_raises(people, version, api_as, monkeypatch):
    monkeypatch.setattr("apps.registry.evidence.predictor.score_rows",
                        lambda *a: (_ for _ in ()).throw(ValueError("bad model")))
    response = api_as(people["viewer"]).post(f"/api/v1/model-versions/{version.uuid}/predict/",
                                             {"inputs": YOUNG_NEW}, format="json")
    assert response.status_code == 400
    assert "bad model" in response.json()["detail"]


def test_api_predict_for_viewer_and_field_errors(people, version, api_as):
    api = api_as(people["viewer"])
    url = f"/api/v1/model-versions/{version.uuid}/predict/"
    ok = api.post(url, {"inputs": {"age": 70, "income": 52000, "tenure": 20}}, format="json")
    assert ok.status_code == 200, ok.content
    assert ok.json()["prediction"] == 0 and "contributions" in ok.json()
    bad = api.post(url, {"inputs": {"age": 70, "tenure": 20}}, format="json")
    assert bad.status_code == 400 and "income" in bad.json()["errors"]
    assert api_as(people["outsider"]).post(url, {"inputs": YOUNG_NEW}, format="json").status_code == 404


def test_a_quarantined_version_cannot_be_tried(people, version):
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.QUARANTINED)
    version.refresh_from_db()
    with pytest.raises(ValidationError, match="quarantined"):
        evidence.load_predictor(version)


def test_predictors_are_cached_per_version_and_artifact(people, version):
    assert evidence.load_predictor(version) is evidence.load_predictor(version)


# --- Explain --------------------------------------------------------------------------------------------------


def test_explain_job_stores_permutation_importance(people, version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        job = evidence.start_explain(version, actor=people["scientist"])
    assert len(queued) == 1 and job.kind == "explain_model"
    job = run_job(job, evidence.explain_version)
    assert job.status == "succeeded", job.error
    version.refresh_from_db()
    explained = version.explainability
    assert explained["method"] == "permutation_importance" and explained["metric"] == "accuracy"
    assert explained["rows"] == 200
    by_name = {f["name"]: f for f in explained["features"]}
    assert set(by_name) == {"age", "income", "tenure"}
    # The label is (age < 35 and tenure < 5): income carries nothing.
    assert by_name["age"]["importance"] > 0.01 and by_name["tenure"]["importance"] > 0.01
    assert by_name["income"]["importance"] == pytest.approx(0, abs=1e-9)
    assert AuditEvent.objects.filter(action="model.explained").exists()


def test_explain_needs_training_data_and_the_edit_right(people, project, version):
    with pytest.raises(PermissionDenied):
        evidence.start_explain(version, actor=people["viewer"])
    ModelVersion.objects.filter(pk=version.pk).update(tags={})
    version.refresh_from_db()
    with pytest.raises(ValidationError, match="target column"):
        evidence.start_explain(version, actor=people["scientist"])


# --- Validation -----------------------------------------------------------------------------------------------


def test_validation_job_stores_report_and_verdict(people, project, version, django_capture_on_commit_callbacks):
    shifted = training_frame(seed=9)
    shifted["income"] = shifted["income"] * 3  # way out of the training range
    data = profiled_training_data(project, people["scientist"], django_capture_on_commit_callbacks, shifted,
                                  name="march-scoring")
    with django_capture_on_commit_callbacks(execute=False):
        validation = evidence.start_validation(version, str(data.uuid), actor=people["scientist"])
    assert validation.verdict == "pending"
    job = run_job(validation.job, evidence.validate_version)
    assert job.status == "succeeded", job.error
    validation.refresh_from_db()
    assert validation.verdict in {"warn", "fail"}
    kinds = {(f["column"], f["kind"]) for f in validation.report["findings"]}
    assert ("income", "out_of_range") in kinds
    assert not any(f["kind"] == "extra_column" for f in validation.report["findings"]), "target is expected"
    same = version.training_dataset
    with django_capture_on_commit_callbacks(execute=False):
        second = evidence.start_validation(version, same, actor=people["scientist"])
    run_job(second.job, evidence.validate_version)
    second.refresh_from_db()
    assert second.verdict == "pass", second.report


def test_validation_refuses_other_projects_data_and_viewers(people, project, other_project, version,
                                                            django_capture_on_commit_callbacks):
    theirs = profiled_training_data(other_project, people["outsider"], django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError, match="No dataset version"):
        evidence.start_validation(version, theirs, actor=people["scientist"])
    with pytest.raises(PermissionDenied):
        evidence.start_validation(version, version.training_dataset, actor=people["viewer"])
    assert not ModelValidation.objects.exists()


def test_api_validate_answers_202_and_lists_validations(people, version, api_as, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        response = api.post(f"/api/v1/model-versions/{version.uuid}/validate/",
                            {"dataset_version": str(version.training_dataset.uuid)}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["job"]["status"] == "queued"
    listed = api.get(f"/api/v1/model-versions/{version.uuid}/validations/").json()
    assert listed["count"] == 1 and listed["results"][0]["verdict"] == "pending"
    bad = api.post(f"/api/v1/model-versions/{version.uuid}/validate/", {"dataset_version": "nope"}, format="json")
    assert bad.status_code == 400 and "dataset_version" in bad.json()["errors"]
    denied = api_as(people["viewer"]).post(f"/api/v1/model-versions/{version.uuid}/validate/",
                                           {"dataset_version": str(version.training_dataset.uuid)}, format="json")
    assert denied.status_code == 403


# --- ONNX optimisation ----------------------------------------------------------------------------------------


def test_optimisation_measures_and_register_onnx_creates_v2(people, version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        job = evidence.start_optimisation(version, actor=people["scientist"])
    job = run_job(job, evidence.optimise_version)
    assert job.status == "succeeded", job.error
    version.refresh_from_db()
    hint = version.optimisation
    assert hint["convertible"] and hint["matches"] and hint["max_abs_diff"] <= 1e-4
    assert hint["single_row_ms"]["sklearn"] > 0 and hint["single_row_ms"]["onnx"] > 0
    assert hint["batch_1000_ms"]["onnx"] > 0 and hint["speedup"] > 0
    with django_capture_on_commit_callbacks(execute=False):
        variant = evidence.register_onnx_variant(version, actor=people["scientist"])
    assert variant.number == 2 and variant.converted_from == version
    variant = run_import(variant)
    assert (variant.status, variant.flavor) == ("ready", "onnx"), variant.error
    result = evidence.predict(variant, actor=people["viewer"], inputs=YOUNG_NEW)
    assert result["prediction"] == 1
    with pytest.raises(ValidationError, match="already registered as v2"):
        evidence.register_onnx_variant(version, actor=people["scientist"])


def test_optimisation_is_for_scientists_and_sklearn_only(people, version, api_as):
    with pytest.raises(PermissionDenied):
        evidence.start_optimisation(version, actor=people["viewer"])
    with pytest.raises(ValidationError, match="Run the ONNX optimisation check first"):
        evidence.register_onnx_variant(version, actor=people["scientist"])
    ModelVersion.objects.filter(pk=version.pk).update(flavor="onnx")
    response = api_as(people["scientist"]).post(f"/api/v1/model-versions/{version.uuid}/optimise/")
    assert response.status_code == 400 and "scikit-learn" in response.json()["detail"]
