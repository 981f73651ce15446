"""Is a simpler model enough? Real comparison jobs on small real scikit-learn models, the card panel, the API,
registering the baseline as a version, and the approvers' packet section."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.audit.models import AuditEvent
from apps.core.models import Job
from apps.registry import evidence, services
from apps.registry.evidence import baselines, baselines_metrics
from apps.registry.models import ModelVersion
from tests.registry.conftest import run_import, skops_bytes, upload
from tests.registry.test_evidence import profiled_training_data

pytestmark = pytest.mark.django_db


def xor_frame(rows: int = 400, seed: int = 5) -> pd.DataFrame:
    """A label no straight line can separate (x1 and x2 of different signs), plus a categorical nuisance column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(0, 1, rows).round(3), "x2": rng.normal(0, 1, rows).round(3),
                          "plan": rng.choice(["basic", "plus", "pro"], rows)})
    frame["label"] = ((frame["x1"] > 0) ^ (frame["x2"] > 0)).astype(int)
    return frame


def linear_frame(rows: int = 400, seed: int = 6) -> pd.DataFrame:
    """A label a straight line separates well, with a gap in x1 to exercise the imputer."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(0, 1, rows).round(3), "x2": rng.normal(0, 1, rows).round(3),
                          "plan": rng.choice(["basic", "plus", "pro"], rows)})
    frame["label"] = (frame["x1"] + frame["x2"] > 0).astype(int)
    frame.loc[3, "x1"] = np.nan
    return frame


def tree_pipeline(depth: int):
    """A decision tree behind a one-hot encoder for `plan` (skops-safe types only)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    return Pipeline([("prepare", ColumnTransformer([("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                                                   remainder="passthrough")),
                     ("tree", DecisionTreeClassifier(max_depth=depth, random_state=0))])


def imported(people, project, capture, frame, model, *, target="label", task_type="classification",
             name="Churn") -> ModelVersion:
    data = profiled_training_data(project, people["scientist"], capture, frame=frame, name=f"{name.lower()}-data")
    model.fit(frame.drop(columns=[target]), frame[target])
    with capture(execute=False):
        version = services.start_import(
            project, actor=people["scientist"], name=name, uploaded=upload("model.skops", skops_bytes(model)),
            fmt="skops", lineage={"training_dataset": str(data.uuid), "target_column": target},
            model_fields={"task_type": task_type})
    version = run_import(version)
    assert version.status == "ready", version.error
    return version


def compare(version: ModelVersion, actor, capture) -> Job:
    with capture(execute=False):
        job = baselines.start_baselines(version, actor=actor)
    baselines.compare_baselines(str(job.id))
    job.refresh_from_db()
    version.refresh_from_db()
    return job


@pytest.fixture(autouse=True)
def _fresh_predictors():
    evidence.clear_cache()


@pytest.fixture
def better(people, project, django_capture_on_commit_callbacks):
    return imported(people, project, django_capture_on_commit_callbacks, xor_frame(), tree_pipeline(4))


@pytest.fixture
def worse(people, project, django_capture_on_commit_callbacks):
    # A one-split stump on data a straight line separates: the logistic regression beats it.
    return imported(people, project, django_capture_on_commit_callbacks, linear_frame(), tree_pipeline(1),
                    name="Stump")


def card_url(version: ModelVersion, suffix: str = "") -> str:
    return f"/models/{version.model.slug}/v{version.number}/{suffix}"


def api_url(version: ModelVersion, suffix: str = "") -> str:
    return f"/api/v1/models/{version.model.slug}/versions/{version.number}/baselines/{suffix}"


# --- The comparison --------------------------------------------------------------------------------------------


def test_a_model_better_than_its_baselines_says_by_how_many_points(people, better, django_capture_on_commit_callbacks):
    job = compare(better, people["scientist"], django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    result = better.baselines
    assert result["lift"]["verdict"] == "better"
    assert (result["seed"], result["test_size"], result["stratified"]) == (42, 0.25, True)
    assert (result["train_rows"], result["test_rows"], result["rows"]) == (300, 100, 400)
    assert [m["key"] for m in result["models"]] == ["model", "majority", "linear"]
    ours, majority, linear = (m["metrics"] for m in result["models"])
    assert set(ours) == {"accuracy", "f1_macro", "roc_auc"}
    assert ours["accuracy"] > 0.9 and linear["accuracy"] < 0.75 and ours["roc_auc"] > 0.9
    assert majority["roc_auc"] == 0.5  # a constant guess ranks nothing
    points = (ours["accuracy"] - linear["accuracy"]) * 100
    assert result["sentence"].startswith(f"This model is {points:.1f} points of accuracy better than a logistic "
                                         "regression that an analyst can explain line by line")
    assert result["features"] == {"numeric": ["x1", "x2"], "categorical": ["plan"], "left_out": []}
    assert any("overstated" in note for note in result["notes"])
    assert job.message == result["sentence"]
    actions = list(AuditEvent.objects.filter(object_id=str(better.uuid), action__startswith="model.baselines")
                   .order_by("sequence").values_list("action", flat=True))
    assert actions == ["model.baselines_started", "model.baselines_compared"]


def test_a_model_worse_than_the_logistic_regression_says_the_simpler_model_may_be_enough(
        people, worse, django_capture_on_commit_callbacks):
    job = compare(worse, people["scientist"], django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    result = worse.baselines
    assert result["lift"]["verdict"] == "worse", result["sentence"]
    assert "points of accuracy worse than a logistic regression" in result["sentence"]
    assert "The simpler model may be enough" in result["sentence"]


def test_a_tiny_difference_is_about_the_same():
    truth = [0, 1] * 50
    ours = list(truth)
    theirs = list(truth)
    ours[0], theirs[1] = 1 - ours[0], 1 - theirs[1]  # one mistake each, on different rows
    ours[2] = 1 - ours[2]  # and one more for ours: 1 point worse, well within chance on 100 rows
    assert baselines_metrics.lift(truth, ours, theirs, True)["verdict"] == "same"


def test_regression_reports_mae_rmse_and_r2(people, project, django_capture_on_commit_callbacks):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(8)
    frame = pd.DataFrame({"size": rng.uniform(20, 200, 300).round(1), "rooms": rng.integers(1, 6, 300),
                          "area": rng.choice(["north", "south"], 300)})
    frame["price"] = (1000 * frame["size"] + 5000 * frame["rooms"] + (frame["area"] == "north") * 20_000
                      + rng.normal(0, 5000, 300)).round(0)
    model = Pipeline([("prepare", ColumnTransformer([("area", OneHotEncoder(), ["area"])], remainder="passthrough")),
                      ("forest", RandomForestRegressor(n_estimators=10, random_state=0))])
    version = imported(people, project, django_capture_on_commit_callbacks, frame, model, target="price",
                       task_type="regression", name="Prices")
    job = compare(version, people["scientist"], django_capture_on_commit_callbacks)
    assert job.status == Job.Status.SUCCEEDED, job.error
    result = version.baselines
    assert result["columns"] == ["MAE", "RMSE", "R²"] and result["stratified"] is False
    assert [m["key"] for m in result["models"]] == ["model", "mean", "linear"]
    linear = result["models"][2]["metrics"]
    assert set(linear) == {"mae", "rmse", "r2"} and linear["r2"] > 0.9  # the truth is linear
    assert result["models"][1]["metrics"]["r2"] <= 0.0
    assert "a linear regression that an analyst can explain line by line" in result["sentence"]
    assert result["baseline_kind"] == "linear_regression"


# --- The honest refusals ---------------------------------------------------------------------------------------


def test_no_training_data_is_refused_with_what_to_do(people, project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        version = services.start_import(project, actor=people["scientist"], name="Bare",
                                        uploaded=upload("tree.skops", skops_bytes()), fmt="skops")
    version = run_import(version)
    with pytest.raises(ValidationError) as caught:
        baselines.start_baselines(version, actor=people["scientist"])
    assert "No training dataset is linked" in caught.value.message_dict["baselines"][0]


def test_missing_target_quarantined_model_and_too_few_rows(people, project, better, client_as,
                                                           django_capture_on_commit_callbacks):
    ModelVersion.objects.filter(pk=better.pk).update(tags={})
    better.refresh_from_db()
    assert "names no target column" in baselines.baselines_problem(better)

    ModelVersion.objects.filter(pk=better.pk).update(tags={"target_column": "label"},
                                                     status=ModelVersion.Status.QUARANTINED)
    better.refresh_from_db()
    with pytest.raises(ValidationError) as caught:
        baselines.start_baselines(better, actor=people["scientist"])
    assert "quarantined" in caught.value.messages[0] and "safe format" in caught.value.messages[0]

    ModelVersion.objects.filter(pk=better.pk).update(status=ModelVersion.Status.READY)
    tiny = profiled_training_data(project, people["scientist"], django_capture_on_commit_callbacks,
                                  frame=xor_frame(rows=12), name="tiny")
    ModelVersion.objects.filter(pk=better.pk).update(training_dataset=tiny)
    better.refresh_from_db()
    job = compare(better, people["scientist"], django_capture_on_commit_callbacks)
    assert job.status == Job.Status.FAILED and "12 row(s) with a target value; at least 30" in job.error
    assert better.baselines is None
    assert AuditEvent.objects.filter(action="model.baselines_failed", object_id=str(better.uuid)).exists()
    html = client_as(people["viewer"]).get(card_url(better)).content.decode()
    assert "The comparison could not be made." in html and "at least 30" in html


def test_a_finished_job_does_not_run_again(people, better, django_capture_on_commit_callbacks):
    job = compare(better, people["scientist"], django_capture_on_commit_callbacks)
    computed = better.baselines["computed_at"]
    baselines.compare_baselines(str(job.id))
    better.refresh_from_db()
    assert better.baselines["computed_at"] == computed


# --- The card ---------------------------------------------------------------------------------------------------


def test_card_panel_empty_state_button_and_result(people, better, client_as, django_capture_on_commit_callbacks):
    scientist = client_as(people["scientist"])
    html = scientist.get(card_url(better)).content.decode()
    assert 'id="baselines-heading"' in html and "Not compared yet." in html
    assert "Compare with simple baselines</button>" in html
    assert "Compare with simple baselines</button>" not in client_as(people["viewer"]).get(card_url(better)).content \
        .decode()

    with django_capture_on_commit_callbacks(execute=False):
        response = scientist.post(card_url(better, "baselines/"))
    assert response.status_code == 302 and response["Location"].endswith("#baselines")
    job = baselines.latest_baselines_job(better)
    html = scientist.get(card_url(better)).content.decode()
    assert f'id="job-{job.id}"' in html and "Comparison with simple baselines" in html  # the progress bar

    baselines.compare_baselines(str(job.id))
    html = client_as(people["viewer"]).get(card_url(better)).content.decode()
    better.refresh_from_db()
    assert better.baselines["sentence"] in html and "points of accuracy better" in html
    assert 'id="baselines-table"' in html and 'data-model="linear"' in html
    assert re.search(r"computed \d{4}-\d\d-\d\d \d\d:\d\d</caption>", html)
    assert "Register the logistic regression as a new version" not in html  # viewers may not
    assert "Register the logistic regression as a new version" in scientist.get(card_url(better)).content.decode()


def test_card_permissions(people, better, client_as, client):
    assert client_as(people["outsider"]).post(card_url(better, "baselines/")).status_code == 404
    assert client_as(people["outsider"]).get(card_url(better)).status_code == 404
    assert client_as(people["viewer"]).post(card_url(better, "baselines/")).status_code == 403
    assert client_as(people["viewer"]).post(card_url(better, "register-baseline/")).status_code == 403
    assert client_as(people["approver"]).post(card_url(better, "baselines/")).status_code == 403
    assert client.post(card_url(better, "baselines/")).status_code == 302  # anonymous: to the login page
    assert not Job.objects.filter(kind=baselines.JOB_KIND).exists()
    with pytest.raises(PermissionDenied):
        baselines.start_baselines(better, actor=people["viewer"])


def test_card_refusal_is_a_message_not_an_error(people, project, client_as, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        version = services.start_import(project, actor=people["scientist"], name="Bare",
                                        uploaded=upload("tree.skops", skops_bytes()), fmt="skops")
    version = run_import(version)
    client = client_as(people["scientist"])
    html = client.get(card_url(version)).content.decode()
    assert "What is needed first: No training dataset is linked" in html
    response = client.post(card_url(version, "baselines/"), follow=True)
    assert response.status_code == 200 and "No training dataset is linked" in response.content.decode()


# --- The API ----------------------------------------------------------------------------------------------------


def test_api_start_read_and_shapes(people, better, api_as, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    empty = api.get(api_url(better))
    assert empty.status_code == 404
    assert empty.json()["detail"] == "Not compared with simple baselines yet." and empty.json()["comparison"] is None
    with django_capture_on_commit_callbacks(execute=False):
        started = api.post(api_url(better))
    assert started.status_code == 202
    job = started.json()["job"]
    assert job["status"] == "queued" and job["url"].endswith(f"/api/v1/jobs/{job['id']}/")
    running = api.get(api_url(better)).json()
    assert running["job"]["id"] == job["id"]
    baselines.compare_baselines(job["id"])
    body = api_as(people["viewer"]).get(api_url(better)).json()
    comparison = body["comparison"]
    assert body["version"] == {"id": str(better.uuid), "model": better.model.slug, "number": better.number}
    assert comparison["lift"]["verdict"] == "better" and comparison["seed"] == 42
    assert {"train_rows", "test_rows", "sentence", "models", "baseline_sha256"} <= set(comparison)
    assert "baseline_file" not in comparison  # a storage path stays inside


def test_api_permissions_and_bad_input(people, better, api_as, project, django_capture_on_commit_callbacks):
    assert api_as(people["outsider"]).get(api_url(better)).status_code == 404
    assert api_as(people["outsider"]).post(api_url(better)).status_code == 404
    assert api_as(people["outsider"]).post(api_url(better, "register/")).status_code == 404
    denied = api_as(people["viewer"]).post(api_url(better))
    assert denied.status_code == 403 and "cannot run model jobs" in denied.json()["detail"]
    assert api_as(people["viewer"]).post(api_url(better, "register/")).status_code == 403
    assert api_as(people["scientist"]).get(f"/api/v1/models/{better.model.slug}/versions/99/baselines/") \
        .status_code == 404
    assert api_as(people["scientist"]).get("/api/v1/models/no-such-model/versions/1/baselines/").status_code == 404
    assert api_as(people["scientist"]).put(api_url(better)).status_code == 405
    early = api_as(people["scientist"]).post(api_url(better, "register/"))
    assert early.status_code == 400 and "Compare this version" in str(early.json())
    from rest_framework.test import APIClient

    assert APIClient().get(api_url(better)).status_code in (401, 403)


# --- Registering the baseline -----------------------------------------------------------------------------------


def test_register_baseline_creates_a_usable_version(people, better, api_as, django_capture_on_commit_callbacks):
    compare(better, people["scientist"], django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        response = api_as(people["scientist"]).post(api_url(better, "register/"))
    assert response.status_code == 201, response.content
    baseline = ModelVersion.objects.get(uuid=response.json()["id"])
    assert baseline.number == better.number + 1 and response.json()["job"]["url"]
    baseline = run_import(baseline)
    assert baseline.status == "ready", (baseline.error, baseline.safety)
    assert baseline.format == "skops" and baseline.training_dataset_id == better.training_dataset_id
    assert baseline.description.startswith(f"Baseline (logistic regression) for v{better.number}")
    assert baseline.tags == {"target_column": "label", "baseline_of": f"v{better.number}",
                             "baseline": "logistic_regression"}
    linear = better.baselines["models"][2]["metrics"]
    assert baseline.metrics["test_accuracy"] == linear["accuracy"]
    # It predicts through the normal path, like any imported version.
    result = evidence.predict(baseline, actor=people["viewer"], inputs={"x1": "1.5", "x2": "-0.3", "plan": "pro"})
    assert result["prediction"] in (0, 1) and set(result["probabilities"]) == {"0", "1"}
    better.refresh_from_db()
    assert better.baselines["registered_version"] == baseline.number
    assert AuditEvent.objects.filter(action="model.baseline_registered", object_id=str(better.uuid)).exists()
    again = api_as(people["scientist"]).post(api_url(better, "register/"))
    assert again.status_code == 400 and f"already registered as v{baseline.number}" in str(again.json())
    compare(better, people["scientist"], django_capture_on_commit_callbacks)  # comparing again keeps the link
    assert better.baselines["registered_version"] == baseline.number


def test_register_baseline_from_the_card(people, better, client_as, django_capture_on_commit_callbacks):
    compare(better, people["scientist"], django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        response = client_as(people["scientist"]).post(card_url(better, "register-baseline/"))
    baseline = better.model.versions.get(number=better.number + 1)
    assert response.status_code == 302 and response["Location"] == card_url(baseline)
    html = client_as(people["viewer"]).get(card_url(better)).content.decode()
    assert f"The baseline is registered as <a href=\"{card_url(baseline)}\">v{baseline.number}</a>" in html


# --- The approvers' packet --------------------------------------------------------------------------------------


def test_packet_shows_the_comparison_or_not_run_yet(people, better, client_as, django_capture_on_commit_callbacks):
    url = card_url(better, "audit-packet/?inline=1")
    html = client_as(people["approver"]).get(url).content.decode()
    block = html[html.index('data-section="baselines"'):html.index('data-section="approvals"')]
    assert "Is a simpler model enough?" in block and "Not run yet." in block
    assert "Compare with simple baselines" in block

    compare(better, people["scientist"], django_capture_on_commit_callbacks)
    html = client_as(people["approver"]).get(url).content.decode()
    block = html[html.index('data-section="baselines"'):html.index('data-section="approvals"')]
    assert better.baselines["sentence"][:30] in block and 'data-verdict="better"' in block
    assert "Logistic regression" in block and "Majority class (always the most common answer)" in block
    assert "Compared with simple baselines" in html  # the audit trail in words


def test_the_sentences_for_each_verdict():
    def result(task, verdict, ours, simplest, linear, simplest_verdict="better"):
        return {"task": task, "test_rows": 100, "rows": 400, "max_rows": 20_000,
                "features": {"left_out": ["signed_up"]}, "lift": {"verdict": verdict, "difference": 0.01},
                "lift_simplest": {"verdict": simplest_verdict}}, [{"metrics": ours}, {"metrics": simplest},
                                                                  {"metrics": linear}]

    sentence, notes = baselines_metrics.words(*result("classification", "same", {"accuracy": 0.81},
                                                      {"accuracy": 0.8}, {"accuracy": 0.8}, "same"))
    assert sentence.startswith("This model is about as accurate as a logistic regression that an analyst")
    assert "The simpler model may be enough." in sentence
    assert any("most common class (80.0% accurate)" in n for n in notes)
    assert "Date inputs left out of the baseline: signed_up." in notes
    sentence, _ = baselines_metrics.words(*result("regression", "worse", {"mae": 1500.0}, {"mae": 9000.0},
                                                  {"mae": 1000.0}))
    assert sentence.startswith("This model's predictions are 50% further from the truth than those of a linear "
                               "regression that an analyst can explain line by line (off by 1,500 on average, "
                               "against 1,000, on 100 test rows).")
    assert "The simpler model may be enough" in sentence


def test_the_approval_request_shows_the_comparison_as_it_stood(people, better, client_as,
                                                                django_capture_on_commit_callbacks):
    from apps.approvals import services as approvals
    from tests.approvals.conftest import ANSWERS

    compare(better, people["scientist"], django_capture_on_commit_callbacks)
    better.refresh_from_db()
    staging = approvals.create_environment(better.model.project, actor=people["admin"], name="staging",
                                           required_approvals=1)
    request = approvals.request_approval(better, staging, actor=people["scientist"], justification="Ready.",
                                       answers=ANSWERS)
    item = next(i for i in request.evidence["checklist"] if i["key"] == "baselines")
    assert item["ok"] is True and item["detail"] == better.baselines["sentence"]

    html = client_as(people["approver"]).get(f"/approvals/{request.uuid}/").content.decode()
    block = html[html.index('id="evidence-baselines"'):html.index("Safety of the file")]
    assert better.baselines["sentence"][:40] in block and "Logistic regression" in block


def test_a_sorted_training_file_is_sampled_across_its_rows_not_cut_at_the_top(people, project,
                                                                               django_capture_on_commit_callbacks):
    """Files are often sorted (by date, by label): the first rows alone would be one class only."""
    from apps.registry.evidence.explain import training_frame as read_training

    frame = xor_frame(rows=400).sort_values("label").reset_index(drop=True)
    version = imported(people, project, django_capture_on_commit_callbacks, frame, tree_pipeline(4))
    head = read_training(version, 100)
    assert head["label"].nunique() == 1  # what the top of the sorted file holds
    sample = read_training(version, 100, sample_seed=42)
    assert len(sample) == 100 and sample["label"].nunique() == 2
    assert sample.equals(read_training(version, 100, sample_seed=42))  # seeded: the same rows every time
    assert len(read_training(version, 1000, sample_seed=42)) == 400  # smaller than asked: all of it
