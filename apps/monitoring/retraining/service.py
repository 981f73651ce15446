"""Closed-loop retraining: refit a deployed scikit-learn champion on fresh labelled data, compare it with the champion
on a holdout, register the challenger as a new version and open an approval request. A person decides; nothing here
deploys.

The refit is `sklearn.base.clone` (same parameters) + `fit`, on the champion's training dataset plus, when the
deployment's settings say so, recent prediction rows that received ground truth. The challenger goes through the
registry's normal import (skops file → scan → signature → MLflow artifact with its digest), so it is a version like
any other.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import bulky_fields
from apps.deployments.models import Deployment
from apps.monitoring.models import MonitoringSettings, RetrainingRun
from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

HOLDOUT_SHARE = 0.2
RANDOM_STATE = 0
MIN_LABELLED_ROWS = 20
RECENT_HOLDOUT_MIN = 50  # with at least this many feedback rows, they take most of the holdout
MAX_TRAINING_ROWS = 2_000_000
ACTIVE = (RetrainingRun.Status.QUEUED, RetrainingRun.Status.RUNNING)
_NEW_VERSION_ELSEWHERE = "import a new version trained outside the portal"


class Refused(Exception):
    """The run cannot go on; the message says why and is shown to people."""


# --- Can this champion be refitted? ---------------------------------------------------------------------------


def retrainability(version: ModelVersion) -> tuple[bool, str]:
    """(True, "") for a scikit-learn estimator with linked, readable training data and a target; else why not."""
    label = f"v{version.number}"
    fmt = version.format
    if fmt == ModelVersion.Format.ONNX:
        return False, f"ONNX graphs cannot be refitted here: {_NEW_VERSION_ELSEWHERE}."
    if fmt in (ModelVersion.Format.XGBOOST, ModelVersion.Format.LIGHTGBM):
        return False, (f"{label} is a native {version.get_format_display()} file, which holds a trained booster "
                       f"without its training settings, so it cannot be refitted here: {_NEW_VERSION_ELSEWHERE}.")
    if not version.is_servable:
        if version.status == ModelVersion.Status.QUARANTINED:
            return False, (f"{label} is quarantined (a file nobody has trusted), so the portal will not open it to "
                           f"refit it: {_NEW_VERSION_ELSEWHERE}, saved with skops.")
        return False, f"{label} is {version.get_status_display().lower()}: only a ready version can be refitted."
    if "sklearn" not in (version.flavor or ""):
        kind = f"a {version.flavor} model" if version.flavor and version.flavor != "python_function" \
            else "a custom MLflow Python model"
        return False, (f"{label} is {kind}: only scikit-learn estimators can be refitted here (the portal cannot "
                       f"tell how custom code was trained), so {_NEW_VERSION_ELSEWHERE}.")
    if not version.input_names:
        return False, (f"{label} has no named input signature, so the portal cannot tell which columns are its "
                       "features: import a new version with its training data linked.")
    training = version.training_dataset
    if training is None:
        return False, (f"No training data is linked to {label}: the portal needs the dataset version it was trained "
                       "on. Import a new version with its training dataset (the import wizard's lineage step).")
    if not training.parquet_name:
        return False, (f"The training data ({training}) has no readable copy yet: profiling has not finished or "
                       "failed. Open the dataset to see why.")
    target = (version.tags or {}).get("target_column")
    if not target:
        return False, (f"{label} does not say which column of its training data is the target: add the tag "
                       "target_column on the model card.")
    columns = {c.get("name") for c in training.schema or []}
    if columns and target not in columns:
        return False, f"The target column “{target}” is not in the training data ({training})."
    missing = [n for n in version.input_names if columns and n not in columns]
    if missing:
        return False, f"The training data ({training}) lacks the model's input “{missing[0]}”."
    return True, ""


# --- Starting runs ----------------------------------------------------------------------------------------------


def start_retraining(deployment: Deployment, *, actor, trigger: str = "manual", alert=None) -> RetrainingRun:
    """Queue a retraining job for the deployment's champion, or return the run already under way (`.existing`).

    `actor` None is the system (an alert rule's action or the schedule)."""
    if actor is not None:
        require(actor, Action.RETRAIN, deployment)
    champion = deployment.champion
    ok, reason = retrainability(champion)
    if not ok:
        raise ValidationError({"deployment": [reason]})
    from apps.monitoring.tasks import retrain_task

    with transaction.atomic():
        Deployment.objects.select_for_update().filter(pk=deployment.pk).first()  # one start at a time
        current = _active_run(deployment)
        if current is not None:
            current.existing = True
            return current
        job = jobs.create_job("retrain", actor=actor, project=deployment.project,
                              params={"deployment": deployment.slug, "trigger": trigger},
                              enqueue=retrain_task)
        run = RetrainingRun.objects.create(deployment=deployment, base_version=champion, job=job, trigger=trigger,
                                           alert=alert, created_by=actor)
        audit.record("retraining.started", actor=actor, actor_label="" if actor else f"retraining ({trigger})",
                     obj=run, project=deployment.project,
                     details={"deployment": deployment.slug, "base_version": str(champion), "trigger": trigger,
                              "alert": str(alert.uuid) if alert else None})
    run.existing = False
    return run


def _active_run(deployment: Deployment) -> RetrainingRun | None:
    """The queued or running run, if any; one whose job already ended (a worker died) is closed as failed."""
    for run in deployment.retraining_runs.filter(status__in=ACTIVE).select_related("job"):
        if run.job is not None and not run.job.is_finished:
            return run
        RetrainingRun.objects.filter(pk=run.pk, status__in=ACTIVE).update(
            status=RetrainingRun.Status.FAILED, finished_at=timezone.now(),
            error=(run.job.error if run.job else "") or "The job stopped before the run finished.")
    return None


def start_scheduled(now: dt.datetime | None = None) -> int:
    """Beat: start a run for every active deployment whose retraining schedule is due; returns how many started."""
    now = now or timezone.now()
    started = 0
    due = MonitoringSettings.objects.filter(retrain_every_days__gt=0, deployment__status=Deployment.Status.ACTIVE)
    for settings in due.select_related("deployment__champion__model", "deployment__project"):
        last = settings.last_scheduled_retrain
        if last is not None and last > now - dt.timedelta(days=settings.retrain_every_days):
            continue
        # Claimed with a conditional update: two beat processes cannot both start the same deployment's run.
        if not MonitoringSettings.objects.filter(pk=settings.pk, last_scheduled_retrain=last).update(
                last_scheduled_retrain=now):
            continue
        try:
            run = start_retraining(settings.deployment, actor=None, trigger="schedule")
        except ValidationError as exc:
            logger.info("scheduled retraining of %s skipped: %s", settings.deployment, exc.messages[0])
            continue
        started += 0 if run.existing else 1
    return started


def latest_runs(deployment: Deployment, limit: int = 5) -> list[RetrainingRun]:
    return list(runs_of(deployment)[:limit])


def runs_of(deployment: Deployment):
    return deployment.retraining_runs.select_related(
        "job", "base_version__model", "new_version__model", "approval__environment", "created_by", "alert").defer(
        *bulky_fields(ModelVersion, "base_version", "new_version"))


# --- The job -----------------------------------------------------------------------------------------------------


def run(job_id: str) -> None:
    """The retraining job (retrain_task): refit, compare, register, request approval. A finished job does nothing;
    a redelivered one whose challenger is already registered goes on from the approval request."""
    if not jobs.start_job(job_id):
        return
    retraining = RetrainingRun.objects.select_related(
        "deployment__environment", "deployment__project", "deployment__created_by", "base_version__model",
        "base_version__training_dataset__dataset", "new_version", "created_by").get(job_id=job_id)
    RetrainingRun.objects.filter(pk=retraining.pk).update(status=RetrainingRun.Status.RUNNING, error="")
    try:
        if retraining.new_version_id is None:
            _retrain(retraining, job_id)
        _finish(retraining, job_id)
    except Refused as exc:
        _failed(retraining, job_id, str(exc))
    except Exception as exc:
        logger.exception("retraining run %s failed", retraining.uuid)
        _failed(retraining, job_id, f"Retraining failed because of an internal error ({type(exc).__name__}). It has "
                                    "been logged; try again or contact the operators.")
        raise


def _retrain(retraining: RetrainingRun, job_id: str) -> None:
    from sklearn.base import clone

    from apps.monitoring.retraining import data

    base = retraining.base_version
    ok, reason = retrainability(base)
    if not ok:
        raise Refused(reason)
    jobs.report_progress(job_id, 5, f"Loading v{base.number}…")
    champion = _estimator(base)
    features = [str(n) for n in getattr(champion, "feature_names_in_", base.input_names)]
    target = base.tags["target_column"]
    jobs.report_progress(job_id, 15, "Reading the training data…")
    training = data.training_frame(base.training_dataset, features, target, max_rows=MAX_TRAINING_ROWS)
    settings, _ = MonitoringSettings.objects.get_or_create(deployment=retraining.deployment)
    feedback, skipped = None, 0
    if settings.retrain_with_feedback:
        jobs.report_progress(job_id, 25, "Collecting labelled feedback…")
        feedback, skipped = data.feedback_frame(retraining.deployment, features, target, like=training,
                                                days=settings.retrain_feedback_days)
    classifier = data.is_classification(champion, base.model.task_type)
    labelled = len(training) + (len(feedback) if feedback is not None else 0)
    if labelled < MIN_LABELLED_ROWS:
        raise Refused(f"Only {labelled} labelled rows: at least {MIN_LABELLED_ROWS} are needed to refit and compare.")
    split = data.split(training, feedback, target, classifier=classifier, share=HOLDOUT_SHARE,
                       random_state=RANDOM_STATE, recent_min=RECENT_HOLDOUT_MIN)
    jobs.report_progress(job_id, 40, f"Fitting on {len(split.train):,} rows…")
    challenger = clone(champion)
    try:
        challenger.fit(split.train[features], split.train[target])
    except Exception as exc:  # the data, not the portal: say what the estimator said
        raise Refused(f"The refit failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    jobs.report_progress(job_id, 65, "Comparing with the champion on the holdout…")
    comparison = data.compare(champion, challenger, split, features, target, classifier=classifier,
                              base_number=base.number, recent_min=RECENT_HOLDOUT_MIN)
    comparison["training"] = {
        "dataset": str(base.training_dataset), "dataset_rows": len(training), "features": features, "target": target,
        "with_feedback": settings.retrain_with_feedback, "feedback_days": settings.retrain_feedback_days,
        "feedback_rows": len(feedback) if feedback is not None else 0, "feedback_skipped": skipped,
        "rows": len(split.train), "feedback_in_training": split.train_feedback}
    jobs.report_progress(job_id, 75, "Registering the retrained model…")
    version = _register(retraining, challenger, comparison)
    RetrainingRun.objects.filter(pk=retraining.pk).update(new_version=version, comparison=comparison)
    retraining.new_version, retraining.comparison = version, comparison


def _estimator(version: ModelVersion):
    """The champion's fitted estimator, loaded the way serving loads it (skops with its allow-list, or an
    admin-trusted pickle): nothing untrusted is unpickled here."""
    from sklearn.base import BaseEstimator

    from apps.registry.evidence.predictor import load_predictor, raw_model

    native = raw_model(load_predictor(version))
    if not isinstance(native, BaseEstimator):
        raise Refused(f"v{version.number} does not load as a scikit-learn estimator "
                      f"({type(native).__name__}), so it cannot be refitted here: {_NEW_VERSION_ELSEWHERE}.")
    return native


def _owner(retraining: RetrainingRun):
    """Who the new version and its approval request are recorded under: the person who started the run, or for
    a system run the person who created the deployment."""
    return retraining.created_by or retraining.deployment.created_by


def _register(retraining: RetrainingRun, challenger, comparison: dict) -> ModelVersion:
    """The challenger as the model's next version, through the registry's import (scan, signature, artifact)."""
    import skops.io as sio

    from apps.registry import services as registry

    base = retraining.base_version
    training = comparison["training"]
    label = f"v{base.number}"
    stored = storage.save_stream("models/incoming", [sio.dumps(challenger)],
                                 filename=f"{base.model.slug}-{label}-retrained.skops")
    lineage_tags = {"retrained_from": label, "retraining_run": str(retraining.uuid)}
    try:
        with transaction.atomic():  # the import runs here, so the queued import task finds its job done
            version = registry.create_version(
                base.model, actor=_owner(retraining),
                description=(f"Retrained from {label} on {timezone.localdate():%Y-%m-%d}: {training['rows']:,} "
                             f"training rows incl. {training['feedback_in_training']:,} labelled feedback rows."),
                format=ModelVersion.Format.SKOPS, original_filename=f"{base.model.slug}-{label}-retrained.skops",
                file_name=stored.name, size_bytes=stored.size, sha256=stored.sha256,
                training_dataset=base.training_dataset, code_repository=base.code_repository,
                code_commit=base.code_commit, params=_params(challenger),
                metrics={k: v for k, v in comparison["challenger"].items() if v is not None},
                tags={"target_column": training["target"], **lineage_tags}, mlflow_tags=lineage_tags)
            registry.import_version(str(version.import_job_id))
    except Exception:
        storage.delete(stored.name)
        raise
    version.refresh_from_db()
    if version.status == ModelVersion.Status.FAILED:
        raise Refused(f"The retrained model could not be registered: {version.error}")
    return version


def _params(estimator) -> dict:
    """get_params as JSON: numbers, text, booleans and None as they are; anything else by its type name."""
    params = {}
    for key, value in sorted(estimator.get_params(deep=True).items())[:200]:
        if value is None or isinstance(value, bool | int | float | str):
            params[key] = value
        else:
            params[key] = type(value).__name__
    return params


def _finish(retraining: RetrainingRun, job_id: str) -> None:
    version = retraining.new_version
    jobs.report_progress(job_id, 90, "Opening the approval request…")
    approval, problem = None, ""
    if version.status != ModelVersion.Status.READY:
        problem = (f"v{version.number} is {version.get_status_display().lower()}: "
                   f"{version.safety.get('summary', '')} No approval was requested.")
    else:
        approval, problem = _request_approval(retraining, version)
    comparison = {**retraining.comparison, "approval_error": problem}
    with transaction.atomic():
        RetrainingRun.objects.filter(pk=retraining.pk).update(
            status=RetrainingRun.Status.SUCCEEDED, approval=approval, comparison=comparison, error=problem,
            finished_at=timezone.now())
        retraining.refresh_from_db()
        audit.record("retraining.finished", actor=None, actor_label="retraining job", obj=retraining,
                     project=retraining.deployment.project,
                     details={"base_version": retraining.base_version.number, "new_version": version.number,
                              "approval": str(approval.uuid) if approval else None, "better": comparison.get("better"),
                              "summary": comparison.get("summary", ""), "problem": problem})
        _notify(retraining, version, approval)
    jobs.succeed_job(job_id, message=f"Registered v{version.number}: {comparison.get('summary', '')}"[:500],
                     result={"run": str(retraining.uuid), "version": str(version.uuid),
                             "approval": str(approval.uuid) if approval else None})


def _request_approval(retraining: RetrainingRun, version: ModelVersion):
    """(request, "") or (None, why not): the deployment's environment, with the comparison as justification."""
    from apps.approvals import services as approvals
    from apps.approvals.models import ApprovalRequest

    environment = retraining.deployment.environment
    owner = _owner(retraining)
    if not environment.gated:
        return None, (f"{environment.name} needs no approval: review the comparison and deploy v{version.number} "
                      "there directly if it is better.")
    if owner is None:
        return None, "Nobody could be named as the requester (the deployment's creator is gone): request it by hand."
    # The questionnaire was answered for this model and environment before; the same answers carry over.
    answers = ApprovalRequest.objects.filter(environment=environment, model_version__model=version.model) \
        .order_by("-created_at").values_list("answers", flat=True).first() or {}
    try:
        request = approvals.request_approval(version, environment, actor=owner, answers=answers,
                                             justification=justification(retraining.comparison, retraining))
    except ValidationError as exc:
        return None, "The approval request could not be opened: " + " ".join(exc.messages)
    except (PermissionDenied, Http404):
        return None, (f"{owner.get_username()} may no longer request approvals in this project: a scientist "
                      f"should request it for v{version.number} by hand.")
    return request, ""


def justification(comparison: dict, retraining: RetrainingRun) -> str:
    """The comparison in plain words, for approvers."""
    training = comparison.get("training", {})
    lines = [f"Retraining run {retraining.uuid} ({retraining.trigger}) refitted v{retraining.base_version.number} "
             f"of the “{retraining.deployment.name}” deployment with the same parameters.",
             comparison.get("summary", ""),
             f"Training: {training.get('rows', 0):,} rows ({training.get('feedback_in_training', 0):,} of them "
             f"labelled feedback from the last {training.get('feedback_days', 0)} days); holdout: "
             f"{comparison.get('holdout_rows', 0):,} rows ({comparison.get('holdout_recent_rows', 0):,} recent).",
             "Holdout metrics (champion → retrained):"]
    for key, champion_value in comparison.get("champion", {}).items():
        challenger_value = comparison.get("challenger", {}).get(key)
        if champion_value is not None and challenger_value is not None:
            lines.append(f"- {key}: {champion_value:.4f} → {challenger_value:.4f}")
    lines += comparison.get("notes", [])
    return "\n".join(line for line in lines if line)


def _notify(retraining: RetrainingRun, version: ModelVersion, approval) -> None:
    from apps.accounts.notifications import notify

    person = _owner(retraining)
    if person is None:
        return
    waiting = "; it waits for approval" if approval else ""
    notify([person], kind="retraining", project=retraining.deployment.project,
           title=f"{retraining.deployment.name}: retrained model v{version.number} registered{waiting}",
           body=retraining.comparison.get("summary", "") + (f" {retraining.error}" if retraining.error else ""),
           url=reverse("deployment-retraining", args=[retraining.deployment.slug]), email=False)


def _failed(retraining: RetrainingRun, job_id: str, error: str) -> None:
    with transaction.atomic():
        RetrainingRun.objects.filter(pk=retraining.pk).update(status=RetrainingRun.Status.FAILED, error=error,
                                                              finished_at=timezone.now())
        audit.record("retraining.failed", actor=None, actor_label="retraining job", obj=retraining,
                     project=retraining.deployment.project, details={"error": error[:500]})
    jobs.fail_job(job_id, error=error, message="Retraining failed")
