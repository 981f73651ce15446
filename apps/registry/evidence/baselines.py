"""Is a simpler model enough? The version against a majority/mean predictor and a logistic/linear regression,
all scored on the same held-out rows of its training data (a job); the regression can become a version of its own.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.registry import services
from apps.registry.evidence import baselines_metrics as metrics
from apps.registry.evidence.explain import training_frame
from apps.registry.evidence.predictor import frame_for, input_columns, load_predictor, score_rows
from apps.registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

JOB_KIND = "compare_baselines"
MAX_ROWS = 20_000  # a seeded sample of the training data: enough for a stable comparison, seconds to fit
MIN_ROWS = 30
TEST_SIZE = 0.25
SEED = 42
MAX_CATEGORIES = 30  # one-hot columns per categorical feature; rarer values share one column
_CLASSIFICATION, _REGRESSION = RegisteredModel.TaskType.CLASSIFICATION, RegisteredModel.TaskType.REGRESSION


def baselines_problem(version: ModelVersion) -> str | None:
    """Why this version cannot be compared with baselines, in words for the page; None when it can."""
    if version.model.task_type not in (_CLASSIFICATION, _REGRESSION):
        return ("Simple baselines are compared for classification and regression models; set the model's task "
                "on its page.")
    if version.training_dataset_id is None:
        return ("No training dataset is linked to this version. Link the dataset version it was trained on (with "
                "its target column) to compare it with simple baselines.")
    target = (version.tags or {}).get("target_column")
    if not target:
        return "The version names no target column. Set the tag “target_column” to the column the model predicts."
    if target not in [c["name"] for c in version.training_dataset.schema or []]:
        return f"The training dataset has no column “{target}” (the version's target column)."
    if version.status == ModelVersion.Status.QUARANTINED and not version.is_servable:
        return (f"{version} is quarantined: its file was never opened, so the portal cannot score it. Import it "
                "again in a safe format (skops, ONNX or MLflow), or ask a project admin to trust the file.")
    if not version.is_servable:
        return f"{version} cannot run (it is {version.get_status_display().lower()}), so it cannot be scored."
    if not input_columns(version):
        return "The version has no named input signature, so its features are unknown."
    return None


def start_baselines(version: ModelVersion, *, actor) -> Job:
    require(actor, Action.EDIT_MODEL, version)
    problem = baselines_problem(version)
    if problem:
        raise ValidationError({"baselines": [problem]})
    from apps.registry.tasks import compare_baselines_task

    with transaction.atomic():
        job = jobs.create_job(JOB_KIND, actor=actor, project=version.project, params={"version": str(version.uuid)},
                              enqueue=compare_baselines_task)
        audit.record("model.baselines_started", actor=actor, obj=version, details={"version": version.number})
    return job


class _Refused(Exception):
    """The comparison cannot be made; the message says why and what to do."""


def compare_baselines(job_id: str) -> None:
    """The job: one seeded split, the imported model and two baselines scored on the same test rows, stored."""
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    version = ModelVersion.objects.select_related("model__project", "training_dataset").get(uuid=job.params["version"])
    try:
        problem = baselines_problem(version)
        if problem:
            raise _Refused(problem)
        result, pipeline = _compare(version, job_id)
    except _Refused as exc:
        with transaction.atomic():
            audit.record("model.baselines_failed", actor=None, actor_label="baselines job", obj=version,
                         details={"version": version.number, "error": str(exc)[:500]})
        jobs.fail_job(job_id, error=str(exc), message="Baselines could not be compared")
        return
    jobs.report_progress(job_id, 90, "Saving the comparison…")
    import skops.io as sio

    stored = storage.save_stream(f"models/baselines/{version.uuid}", [sio.dumps(pipeline)],
                                 filename=f"{version.model.slug}-v{version.number}-baseline.skops")
    previous = version.baselines or {}
    # A baseline already registered stays the registered one: comparing again must not invite a duplicate.
    result.update(baseline_file=stored.name, baseline_sha256=stored.sha256, baseline_bytes=stored.size,
                  computed_at=timezone.now().isoformat(), job=str(job_id),
                  registered_version=previous.get("registered_version"))
    old_file = previous.get("baseline_file")
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(baselines=result)
        audit.record("model.baselines_compared", actor=None, actor_label="baselines job", obj=version,
                     details={"version": version.number, "verdict": result["lift"]["verdict"],
                              "metric": result["metric"], "difference": result["lift"]["difference"],
                              "test_rows": result["test_rows"], "seed": SEED})
        if old_file and old_file != stored.name:
            transaction.on_commit(lambda: storage.delete(old_file))
    jobs.succeed_job(job_id, result={"version": str(version.uuid), "verdict": result["lift"]["verdict"]},
                     message=result["sentence"])


def _compare(version: ModelVersion, job_id: str):
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import train_test_split

    jobs.report_progress(job_id, 5, "Reading the training data…")
    classification = version.model.task_type == _CLASSIFICATION
    target = version.tags["target_column"]
    frame = training_frame(version, MAX_ROWS, sample_seed=SEED)
    if frame is None:
        raise _Refused("The training dataset has no readable rows yet; wait for its profiling to finish.")
    features = [c["name"] for c in input_columns(version)]
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise _Refused(f"The training data lacks the model's input column(s): {', '.join(missing)}.")
    frame = frame.dropna(subset=[target]).reset_index(drop=True)
    if len(frame) < MIN_ROWS:
        raise _Refused(f"The training data has {len(frame)} row(s) with a target value; at least {MIN_ROWS} are "
                       "needed to hold some back for a fair test.")
    y = frame[target]
    if classification and pd.api.types.is_float_dtype(y) and (y == y.round()).all():
        y = y.astype("int64")
    stratified = False
    if classification:
        counts = y.map(metrics.label).value_counts()
        if len(counts) < 2:
            raise _Refused(f"Every training row has the same target value (“{counts.index[0]}”); there is nothing "
                           "to compare.")
        stratified = int(counts.min()) >= 2
    train, test = train_test_split(np.arange(len(frame)), test_size=TEST_SIZE, random_state=SEED,
                                   stratify=y.map(metrics.label) if stratified else None)
    x_train, x_test, y_train, y_test = frame.iloc[train][features], frame.iloc[test][features], \
        y.iloc[train], y.iloc[test]

    jobs.report_progress(job_id, 20, "Scoring the imported model on the test rows…")
    try:
        predictor = load_predictor(version)
    except ValidationError as exc:
        raise _Refused(" ".join(exc.messages)) from None
    except Exception as exc:
        logger.info("loading %s for baselines failed: %s", version, exc)
        raise _Refused(f"The model could not be loaded ({type(exc).__name__}: {str(exc)[:300]}).") from None
    try:
        predictions, probabilities, classes = score_rows(predictor, frame_for(version, x_test.to_dict("records")))
    except Exception as exc:
        raise _Refused(f"The model failed on the test rows ({type(exc).__name__}: {str(exc)[:300]}).") from None

    jobs.report_progress(job_id, 50, "Fitting the simple baselines on the training rows…")
    dummy, pipeline, used = _baselines(x_train, classification)
    try:
        dummy.fit(x_train, y_train)
        pipeline.fit(x_train, y_train)
    except Exception as exc:
        raise _Refused(f"The baseline could not be fitted ({type(exc).__name__}: {str(exc)[:300]}).") from None

    jobs.report_progress(job_id, 75, "Scoring everything on the same test rows…")
    scored = {"model": (predictions, probabilities, classes)}
    for key, estimator in (("majority" if classification else "mean", dummy), ("linear", pipeline)):
        proba = estimator.predict_proba(x_test).tolist() if classification else None
        scored[key] = (list(estimator.predict(x_test)), proba,
                       list(estimator.classes_) if classification else None)
    metric = "accuracy" if classification else "mae"
    score = metrics.classification_metrics if classification else metrics.regression_metrics
    models = [{"key": key, "label": _model_label(key, version, classification, dummy),
               "metrics": score(y_test, *scored[key])} for key in scored]
    for entry in models:
        entry["values"] = list(entry["metrics"].values())
    lift = metrics.lift(y_test, scored["model"][0], scored["linear"][0], classification)
    lift_simplest = metrics.lift(y_test, scored["model"][0], scored["majority" if classification else "mean"][0],
                          classification)
    result = {
        "task": "classification" if classification else "regression",
        "target": target, "features": used,
        "rows": len(frame), "train_rows": len(train), "test_rows": len(test), "max_rows": MAX_ROWS,
        "seed": SEED, "test_size": TEST_SIZE, "stratified": stratified,
        "dataset_version": str(version.training_dataset.uuid), "dataset_sha256": version.training_dataset.sha256,
        "metric": metric,
        "columns": ["Accuracy", "F1 (macro)", "ROC AUC"] if classification else ["MAE", "RMSE", "R²"],
        "models": models, "lift": lift, "lift_simplest": lift_simplest,
        "baseline_kind": "logistic_regression" if classification else "linear_regression",
    }
    result["sentence"], result["notes"] = metrics.words(result, models)
    return result, pipeline


def _baselines(x_train, classification: bool):
    """A majority-class / mean predictor, and one-hot + impute + scale into a logistic / linear regression."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric, categorical, left_out = [], [], []
    for name in x_train.columns:
        kind = x_train[name].dtype
        if pd.api.types.is_bool_dtype(kind) or not pd.api.types.is_numeric_dtype(kind):
            # Dates have no line-by-line meaning in a linear model; left out rather than guessed at.
            (left_out if pd.api.types.is_datetime64_any_dtype(kind) else categorical).append(name)
        else:
            numeric.append(name)
    parts = []
    if numeric:
        parts.append(("numbers", Pipeline([("fill_gaps", SimpleImputer(strategy="median")),
                                           ("scale", StandardScaler())]), numeric))
    if categorical:  # OneHotEncoder keeps a missing value as a category of its own
        parts.append(("categories", OneHotEncoder(handle_unknown="ignore", max_categories=MAX_CATEGORIES),
                      categorical))
    if not parts:
        raise _Refused("None of the model's inputs can be used by a linear model (they are all dates).")
    estimator = LogisticRegression(max_iter=2000) if classification else LinearRegression()
    pipeline = Pipeline([("prepare", ColumnTransformer(parts, remainder="drop")), ("model", estimator)])
    dummy = DummyClassifier(strategy="most_frequent") if classification else DummyRegressor(strategy="mean")
    return dummy, pipeline, {"numeric": numeric, "categorical": categorical, "left_out": left_out}


def _model_label(key: str, version: ModelVersion, classification: bool, dummy) -> str:
    if key == "model":
        return f"This model (v{version.number})"
    if key == "majority":
        return "Majority class (always the most common answer)"  # not the value: the packet shows no data values
    if key == "mean":
        return f"Mean (always {metrics.number(float(dummy.constant_.ravel()[0]))})"
    return "Logistic regression" if classification else "Linear regression"


# --- The card and the API ------------------------------------------------------------------------------------


def latest_baselines_job(version: ModelVersion) -> Job | None:
    return Job.objects.filter(kind=JOB_KIND, params__version=str(version.uuid)).order_by("-created_at").first()


def baselines_state(version: ModelVersion, user) -> dict:
    """What the card's panel and the API show: the stored comparison, a running or failed job, what is missing."""
    job = latest_baselines_job(version)
    stored = version.baselines
    failed = job if job and job.status == Job.Status.FAILED else None  # the newest run, so newer than `stored`
    registered = None
    if stored and stored.get("registered_version"):
        registered = version.model.versions.filter(number=stored["registered_version"]).first()
    computed = stored.get("computed_at") if stored else None
    return {
        "baselines": stored,
        "baselines_computed_at": datetime.fromisoformat(computed) if computed else None,
        "baselines_job": job if job and not job.is_finished else None,
        "baselines_failed": failed,
        "baselines_problem": baselines_problem(version),
        "baseline_version": registered,
        "may_compare_baselines": can(user, Action.EDIT_MODEL, version),
        "may_register_baseline": can(user, Action.IMPORT_MODEL, version) and can(user, Action.EDIT_MODEL, version),
    }


# --- Register the baseline as a version ----------------------------------------------------------------------


def register_baseline(version: ModelVersion, *, actor) -> ModelVersion:
    """Import the compared logistic/linear pipeline as the model's next version, through the normal import job."""
    require(actor, Action.IMPORT_MODEL, version)
    require(actor, Action.EDIT_MODEL, version)
    stored = version.baselines or {}
    if not stored.get("baseline_file"):
        raise ValidationError({"baselines": ["Compare this version with simple baselines first."]})
    if stored.get("registered_version"):
        existing = version.model.versions.filter(number=stored["registered_version"]).exclude(
            status__in=[ModelVersion.Status.FAILED, ModelVersion.Status.ARCHIVED]).first()
        if existing is not None:
            raise ValidationError({"baselines": [f"The baseline is already registered as v{existing.number}."]})
    # A copy, so the new version owns its file whatever a later comparison does to this one.
    with storage.open_stream(stored["baseline_file"]) as handle:
        copy = storage.save_stream("models/incoming", iter(lambda: handle.read(1 << 20), b""),
                                   filename=f"{version.model.slug}-v{version.number}-baseline.skops")
    if copy.sha256 != stored.get("baseline_sha256"):
        storage.delete(copy.name)
        raise ValidationError({"baselines": ["The stored baseline file changed since the comparison; compare again."]})
    try:
        with transaction.atomic():
            baseline = _create_baseline_version(version, actor, copy, stored)
            ModelVersion.objects.filter(pk=version.pk).update(
                baselines={**stored, "registered_version": baseline.number})
            audit.record("model.baseline_registered", actor=actor, obj=version,
                         details={"version": version.number, "baseline": baseline.number,
                                  "kind": stored["baseline_kind"], "sha256": copy.sha256})
    except Exception:
        storage.delete(copy.name)
        raise
    version.baselines = {**stored, "registered_version": baseline.number}
    return baseline


def _create_baseline_version(version: ModelVersion, actor, copy: storage.StoredFile, stored: dict) -> ModelVersion:
    kind_words = stored["baseline_kind"].replace("_", " ")
    linear = next(m for m in stored["models"] if m["key"] == "linear")
    scores = {f"test_{k}": v for k, v in linear["metrics"].items() if v is not None}
    return services.create_version(
        version.model,
        actor=actor,
        description=f"Baseline ({kind_words}) for v{version.number}, fitted by the portal on {stored['train_rows']} "
                    f"rows of the same training data (seed {stored['seed']}) and tested on {stored['test_rows']}.",
        format=ModelVersion.Format.SKOPS,
        original_filename=f"{version.model.slug}-v{version.number}-baseline.skops",
        file_name=copy.name,
        size_bytes=copy.size,
        sha256=copy.sha256,
        training_dataset=version.training_dataset,
        params={"baseline": stored["baseline_kind"], "seed": str(stored["seed"]),
                "test_size": str(stored["test_size"]), "train_rows": str(stored["train_rows"])},
        metrics=scores,
        requirements=[],
        tags={"target_column": stored["target"], "baseline_of": f"v{version.number}",
              "baseline": stored["baseline_kind"]},
        # The import job allows the few data-only types the portal's own pipeline holds, for this exact file.
        safety={"fitted_by_portal": copy.sha256},
    )
