"""Closed-loop retraining: refit the champion, compare on a holdout, register the challenger, ask for approval."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.approvals.models import ApprovalRequest
from apps.audit.models import AuditEvent
from apps.deployments import services as deployments
from apps.monitoring import retraining
from apps.monitoring.models import GroundTruth, MonitoringSettings, RetrainingRun
from apps.registry import services as registry
from apps.registry.models import ModelVersion
from tests.deployments.conftest import RaisingModel, approve, custom_version
from tests.monitoring.conftest import log_predictions
from tests.registry.conftest import onnx_bytes, run_import, training_frame, upload


@pytest.fixture
def live(people, project, production, version):
    """The skops tree deployed to a gated environment (approved), so a retrained version needs approval there."""
    approve(version, production, people)
    return deployments.deploy(project, actor=people["scientist"], name="Churn prod", environment=production,
                              version=version)


def retrain(deployment, actor, capture) -> RetrainingRun:
    """Start a run and execute its job in this process, as the Celery task does."""
    with capture(execute=False) as callbacks:
        run = retraining.start_retraining(deployment, actor=actor)
    assert len(callbacks) == 1  # the job is enqueued after commit
    with capture(execute=False):  # the registry's queued import task is not run: the job already imported it
        retraining.run(str(run.job_id))
    run.refresh_from_db()
    return run


def labelled_traffic(deployment, rows: int, *, days_ago: float = 2, seed: int = 11) -> list:
    """`rows` logged one-row requests with ground truth by a new rule (the world changed: income now decides)."""
    frame = training_frame(rows=rows, seed=seed)
    records = log_predictions(deployment, frame[["age", "income", "tenure"]].to_dict("records"),
                              at=timezone.now() - dt.timedelta(days=days_ago), spread=dt.timedelta(hours=12))
    for log, income in zip(records, frame["income"], strict=True):
        GroundTruth.objects.create(deployment=deployment, request_id=log.request_id, row=0,
                                   label=int(income < 35_000), prediction=log.outputs[0],
                                   model_version=log.model_version, predicted_at=log.created_at)
    return records


# --- The loop ------------------------------------------------------------------------------------------------------


def test_the_loop_registers_a_new_version_and_opens_an_approval_request(people, live, version,
                                                                         django_capture_on_commit_callbacks):
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)

    assert run.status == RetrainingRun.Status.SUCCEEDED, run.error
    new = run.new_version
    assert new.status == ModelVersion.Status.READY
    assert new.number == version.number + 1 and new.model_id == version.model_id
    assert new.training_dataset_id == version.training_dataset_id
    assert new.tags["target_column"] == "churned"
    assert new.tags["retrained_from"] == f"v{version.number}" and new.tags["retraining_run"] == str(run.uuid)
    assert new.mlflow_tags["retrained_from"] == f"v{version.number}"
    assert new.description.startswith(f"Retrained from v{version.number} on ")
    assert "incl. 0 labelled feedback rows" in new.description
    assert new.params["max_depth"] == 3 and new.metrics["accuracy"] is not None
    assert new.artifact_sha256 and new.signature["inputs"]
    assert new.created_by == people["scientist"]

    approval = run.approval
    assert approval.status == ApprovalRequest.Status.PENDING
    assert approval.environment == live.environment and approval.model_version == new
    assert approval.requested_by == people["scientist"]
    assert run.comparison["summary"] in approval.justification

    comparison = run.comparison
    assert comparison["kind"] == "classification" and comparison["primary_metric"] == "accuracy"
    assert set(comparison["champion"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert comparison["holdout_rows"] == 40 and comparison["training"]["rows"] == 160
    assert comparison["summary"].startswith("The retrained model")
    assert run.job.status == "succeeded" and run.job.progress == 100
    assert AuditEvent.objects.filter(action="retraining.started", object_id=str(run.uuid)).exists()
    assert AuditEvent.objects.filter(action="retraining.finished", object_id=str(run.uuid)).exists()


def test_a_finished_job_run_again_does_nothing(people, live, django_capture_on_commit_callbacks):
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)
    versions = ModelVersion.objects.count()
    with django_capture_on_commit_callbacks(execute=False):
        retraining.run(str(run.job_id))
    assert ModelVersion.objects.count() == versions
    assert RetrainingRun.objects.get(pk=run.pk).approval_id == run.approval_id


def test_recent_labelled_feedback_is_trained_on_and_fills_the_holdout(people, live,
                                                                       django_capture_on_commit_callbacks):
    labelled_traffic(live, 120)
    labelled_traffic(live, 30, days_ago=45, seed=12)  # older than the 30-day window: left out
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)

    training = run.comparison["training"]
    assert training["feedback_rows"] == 120 and training["feedback_skipped"] == 0
    # 200 training + 120 feedback rows, 64 held out: the 60 most recent feedback rows and 4 training rows.
    assert run.comparison["holdout_recent_rows"] == 60 and run.comparison["holdout_rows"] == 64
    assert training["feedback_in_training"] == 60 and training["rows"] == 196 + 60
    assert run.comparison["recent"]["rows"] == 60
    assert "the 60 most recent labelled rows" in run.comparison["summary"]
    assert "incl. 60 labelled feedback rows" in run.new_version.description
    assert any("describe the world now" in note for note in run.comparison["notes"])


def test_feedback_is_left_out_when_the_settings_say_so(people, live, django_capture_on_commit_callbacks):
    labelled_traffic(live, 60)
    MonitoringSettings.objects.create(deployment=live, retrain_with_feedback=False)
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)
    assert run.comparison["training"]["feedback_rows"] == 0 and run.comparison["training"]["rows"] == 160


def test_an_ungated_environment_keeps_the_version_and_says_why_there_is_no_request(
        people, deployment, django_capture_on_commit_callbacks):
    run = retrain(deployment, people["scientist"], django_capture_on_commit_callbacks)
    assert run.status == RetrainingRun.Status.SUCCEEDED and run.new_version.status == ModelVersion.Status.READY
    assert run.approval is None
    assert "needs no approval" in run.error and run.comparison["approval_error"] == run.error


def test_a_system_run_requests_approval_as_the_deployments_creator(people, live, django_capture_on_commit_callbacks):
    run = retrain(live, None, django_capture_on_commit_callbacks)
    assert run.created_by is None
    assert run.approval.requested_by == live.created_by == people["scientist"]


# --- Refusals ------------------------------------------------------------------------------------------------------


def test_an_onnx_champion_is_refused_with_the_reason(people, project, sandbox, training,
                                                     django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        onnx = registry.start_import(project, actor=people["scientist"], name="Churn graph",
                                     uploaded=upload("tree.onnx", onnx_bytes()), fmt="onnx",
                                     lineage={"training_dataset": str(training.uuid), "target_column": "churned"})
    onnx = run_import(onnx)
    live = deployments.deploy(project, actor=people["scientist"], name="Graph", environment=sandbox, version=onnx)
    assert retraining.retrainability(onnx) == (False, "ONNX graphs cannot be refitted here: import a new version "
                                                      "trained outside the portal.")
    with pytest.raises(ValidationError, match="ONNX graphs cannot be refitted"):
        retraining.start_retraining(live, actor=people["scientist"])
    assert not RetrainingRun.objects.exists()


def test_a_custom_pyfunc_is_refused_with_the_reason(people, project, tmp_path):
    custom = custom_version(project, people["scientist"], RaisingModel, tmp_path, name="Custom")
    ok, reason = retraining.retrainability(custom)
    assert not ok and "custom MLflow Python model" in reason and "import a new version" in reason


def test_a_champion_without_training_data_or_target_is_refused(version):
    ModelVersion.objects.filter(pk=version.pk).update(tags={})
    version.refresh_from_db()
    ok, reason = retraining.retrainability(version)
    assert not ok and "target_column" in reason
    ModelVersion.objects.filter(pk=version.pk).update(training_dataset=None)
    version.refresh_from_db()
    assert retraining.retrainability(version)[1].startswith("No training data is linked to v1")


def test_a_second_start_while_one_runs_returns_the_same_run(people, deployment, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        first = retraining.start_retraining(deployment, actor=people["scientist"])
        second = retraining.start_retraining(deployment, actor=people["admin"])
    assert second.pk == first.pk and second.existing and not first.existing
    assert RetrainingRun.objects.count() == 1


def test_a_run_whose_job_died_does_not_block_the_next(people, deployment, django_capture_on_commit_callbacks):
    from apps.core import services as jobs

    with django_capture_on_commit_callbacks(execute=False):
        first = retraining.start_retraining(deployment, actor=people["scientist"])
        jobs.fail_job(first.job_id, error="worker lost")
        second = retraining.start_retraining(deployment, actor=people["scientist"])
    assert second.pk != first.pk
    assert RetrainingRun.objects.get(pk=first.pk).status == RetrainingRun.Status.FAILED


def test_schedule_starts_due_deployments_once(people, deployment, django_capture_on_commit_callbacks):
    MonitoringSettings.objects.create(deployment=deployment, retrain_every_days=7)
    with django_capture_on_commit_callbacks(execute=False):
        assert retraining.start_scheduled() == 1
        assert retraining.start_scheduled() == 0  # just ran: not due for a week
        later = timezone.now() + dt.timedelta(days=8)
        assert retraining.start_scheduled(now=later) == 0  # due, but the first run is still under way
    run = RetrainingRun.objects.get()
    assert run.trigger == "schedule" and run.created_by is None


# --- API and pages: who may do what --------------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "code"), [("viewer", 403), ("approver", 403), ("outsider", 404), ("scientist", 202)])
def test_api_start_permissions(people, api_as, deployment, who, code, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = api_as(people[who]).post(f"/api/v1/deployments/{deployment.slug}/retrain/")
    assert response.status_code == code, response.content
    if code == 202:
        body = response.json()
        assert body["run"] == str(RetrainingRun.objects.get().uuid) and body["job"]["url"].endswith("/")
        assert body["already_running"] is False
    else:
        assert not RetrainingRun.objects.exists()


def test_api_second_start_answers_the_same_run(people, api_as, deployment, django_capture_on_commit_callbacks):
    api = api_as(people["scientist"])
    with django_capture_on_commit_callbacks(execute=False):
        first = api.post(f"/api/v1/deployments/{deployment.slug}/retrain/").json()
        second = api.post(f"/api/v1/deployments/{deployment.slug}/retrain/")
    assert second.status_code == 202 and second.json()["run"] == first["run"] and second.json()["already_running"]


def test_api_refuses_an_unretrainable_champion_with_409(people, api_as, deployment, version):
    ModelVersion.objects.filter(pk=version.pk).update(tags={})
    response = api_as(people["scientist"]).post(f"/api/v1/deployments/{deployment.slug}/retrain/")
    assert response.status_code == 409 and "target_column" in response.json()["detail"]
    assert "target_column" in response.json()["errors"]["deployment"][0]


def test_api_lists_and_reads_runs(people, api_as, live, django_capture_on_commit_callbacks):
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)
    listed = api_as(people["viewer"]).get(f"/api/v1/deployments/{live.slug}/retraining-runs/")
    assert listed.status_code == 200 and listed.json()["count"] == 1
    detail = api_as(people["viewer"]).get(f"/api/v1/retraining-runs/{run.uuid}/").json()
    assert detail["status"] == "succeeded" and detail["new_version"]["number"] == 2
    assert detail["approval"]["status"] == "pending" and detail["comparison"]["summary"]
    outsider = api_as(people["outsider"])
    assert outsider.get(f"/api/v1/deployments/{live.slug}/retraining-runs/").status_code == 404
    assert outsider.get(f"/api/v1/retraining-runs/{run.uuid}/").status_code == 404


def test_page_shows_runs_comparison_and_links(people, client_as, live, django_capture_on_commit_callbacks):
    run = retrain(live, people["scientist"], django_capture_on_commit_callbacks)
    page = client_as(people["viewer"]).get(f"/deployments/{live.slug}/retraining/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Retrain now" not in html  # viewers read, they do not start
    assert run.comparison["summary"].replace("'", "&#x27;") in html
    assert f"/approvals/{run.approval.uuid}/" in html and f"/v{run.new_version.number}/" in html
    assert 'data-metric="accuracy"' in html
    row = client_as(people["viewer"]).get(f"/deployments/{live.slug}/retraining/{run.uuid}/")
    assert row.status_code == 200 and "hx-get" not in row.content.decode()  # finished: no more polling


def test_page_permissions_and_start(people, client_as, deployment, django_capture_on_commit_callbacks):
    url = f"/deployments/{deployment.slug}/retraining/"
    assert client_as(people["outsider"]).get(url).status_code == 404
    assert client_as(people["viewer"]).post(url + "start/").status_code == 403
    assert client_as(people["outsider"]).post(url + "start/").status_code == 404
    scientist = client_as(people["scientist"])
    assert "Retrain now" in scientist.get(url).content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = scientist.post(url + "start/")
    assert response.status_code == 302 and response["Location"] == url
    run = RetrainingRun.objects.get()
    html = scientist.get(url).content.decode()
    assert f'id="retraining-run-{run.uuid}"' in html and "<progress" in html and "hx-get" in html


def test_page_explains_an_unretrainable_champion_and_links_the_import_wizard(people, client_as, deployment, version):
    ModelVersion.objects.filter(pk=version.pk).update(training_dataset=None)
    html = client_as(people["scientist"]).get(f"/deployments/{deployment.slug}/retraining/").content.decode()
    assert "No training data is linked to v1" in html and "/models/import/" in html
    assert "Retrain now" not in html


# --- The holdout and the comparison, on plain frames -----------------------------------------------------------------


def test_holdout_is_stratified_and_recent_feedback_fills_it():
    from apps.monitoring.retraining import data

    frame = training_frame(rows=200)
    feedback = training_frame(rows=80, seed=9)
    split = data.split(frame, feedback, "churned", classifier=True, share=0.2, random_state=0, recent_min=50)
    assert len(split.holdout) == 56 and len(split.recent) == 40 and split.train_feedback == 40
    assert split.recent.equals(feedback.iloc[40:].reset_index(drop=True))  # the most recent, not a random sample
    few = data.split(frame, feedback.head(10), "churned", classifier=True, share=0.2, random_state=0, recent_min=50)
    assert len(few.recent) == 2 and len(few.holdout) == 42  # few feedback rows: held out in proportion
    held = data.split(frame, None, "churned", classifier=True, share=0.2, random_state=0, recent_min=50).holdout
    assert abs(held["churned"].mean() - frame["churned"].mean()) < 0.03


def test_regressors_are_compared_on_error():
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression

    from apps.monitoring.retraining import data

    frame = training_frame(rows=200)
    frame["spend"] = frame["income"] * 0.1 + frame["age"]
    features = ["age", "income", "tenure"]
    split = data.split(frame, None, "spend", classifier=False, share=0.2, random_state=0, recent_min=50)
    champion = LinearRegression().fit(frame[features].head(20), frame["spend"].head(20) + 50)  # a worse, biased fit
    challenger = clone(champion).fit(split.train[features], split.train["spend"])
    comparison = data.compare(champion, challenger, split, features, "spend", classifier=False, base_number=4)
    assert comparison["primary_metric"] == "mae" and comparison["better"] is True
    assert set(comparison["challenger"]) == {"mae", "rmse", "r2"}
    assert comparison["summary"].startswith("The retrained model's predictions are off by") and "less" in \
        comparison["summary"] and "v4's on 40 held-out rows" in comparison["summary"]
    assert [row["key"] for row in data.comparison_rows(comparison)] == ["mae", "rmse", "r2"]
