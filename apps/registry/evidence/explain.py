"""Global explainability: permutation feature importance of a version on its linked training data (a job)."""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.registry.evidence.predictor import frame_for, input_columns, load_predictor, score_rows
from apps.registry.models import ModelVersion, RegisteredModel

logger = logging.getLogger(__name__)

MAX_ROWS = 2000
N_REPEATS = 5


def training_frame(version: ModelVersion, rows: int = MAX_ROWS, *, sample_seed: int | None = None):
    """Up to `rows` rows of the linked training dataset version (all its columns), or None if none is linked.

    The first rows by default; with `sample_seed`, a seeded uniform sample of the whole file when it is bigger
    (data is often sorted by date or label, so the first rows can be one kind only). Either way only the kept
    rows are held in memory.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset_version = version.training_dataset
    if dataset_version is None or not dataset_version.parquet_name:
        return None
    batches, total = [], 0
    with storage.open_stream(dataset_version.parquet_name) as handle:
        parquet = pq.ParquetFile(handle)
        available = parquet.metadata.num_rows
        if sample_seed is not None and available > rows:
            wanted = np.sort(np.random.default_rng(sample_seed).choice(available, size=rows, replace=False))
            start = 0
            for batch in parquet.iter_batches(batch_size=10_000):
                lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
                if hi > lo:
                    batches.append(batch.take(pa.array(wanted[lo:hi] - start)))
                start += batch.num_rows
        else:
            for batch in parquet.iter_batches(batch_size=min(rows, 10_000)):
                batches.append(batch.slice(0, rows - total))
                total += batches[-1].num_rows
                if total >= rows:
                    break
    if not batches:
        return None
    return pa.Table.from_batches(batches).to_pandas()


def explain_problem(version: ModelVersion) -> str | None:
    """Why importance cannot be computed for this version, in words for the page; None when it can."""
    if not version.is_servable:
        return f"{version} is not servable (it is {version.get_status_display().lower()})."
    if version.training_dataset_id is None:
        return ("No training dataset is linked to this version. Link the dataset version it was trained on "
                "(with its target column) to compute feature importance.")
    target = (version.tags or {}).get("target_column")
    if not target:
        return "The version names no target column. Set the tag “target_column” to the column the model predicts."
    if target not in [c["name"] for c in version.training_dataset.schema]:
        return f"The training dataset has no column “{target}” (the version's target column)."
    if not input_columns(version):
        return "The version has no named input signature, so its features are unknown."
    return None


def start_explain(version: ModelVersion, *, actor) -> Job:
    require(actor, Action.EDIT_MODEL, version)
    problem = explain_problem(version)
    if problem:
        raise ValidationError({"training_dataset": [problem]})
    from apps.registry.tasks import explain_version_task

    with transaction.atomic():
        job = jobs.create_job("explain_model", actor=actor, project=version.project,
                              params={"version": str(version.uuid)},
                              enqueue=explain_version_task)
        audit.record("model.explain_started", actor=actor, obj=version, details={"version": version.number})
    return job


class _Estimator:
    """The shape scikit-learn's permutation_importance expects, around a pyfunc that only predicts."""

    def __init__(self, version: ModelVersion, predictor) -> None:
        self.version, self.predictor = version, predictor

    def fit(self, *args, **kwargs) -> _Estimator:
        return self

    def predict(self, frame):
        return score_rows(self.predictor, frame_for(self.version, frame.to_dict("records")))[0]


def explain_version(job_id: str) -> None:
    """The job: permutation importance (accuracy for classifiers, R² otherwise) on ≤ 2,000 training rows."""
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    version = ModelVersion.objects.select_related("model__project", "training_dataset").get(uuid=job.params["version"])
    problem = explain_problem(version)
    if problem:
        jobs.fail_job(job_id, error=problem, message="Feature importance cannot be computed")
        return
    import numpy as np
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import accuracy_score, r2_score

    jobs.report_progress(job_id, 5, "Reading the training data…")
    target = version.tags["target_column"]
    frame = training_frame(version)
    features = [c["name"] for c in input_columns(version)]
    missing = [name for name in features if name not in frame.columns]
    if missing:
        jobs.fail_job(job_id, error=f"The training data lacks the model's input column(s): {', '.join(missing)}.",
                      message="Feature importance cannot be computed")
        return
    frame = frame.dropna(subset=[target])
    if len(frame) < 10:
        jobs.fail_job(job_id, error="The training data has fewer than 10 rows with a target value.",
                      message="Feature importance cannot be computed")
        return
    classification = version.model.task_type == RegisteredModel.TaskType.CLASSIFICATION
    metric = "accuracy" if classification else "r2"
    score = accuracy_score if classification else r2_score
    estimator = _Estimator(version, load_predictor(version))
    calls = {"n": 0, "total": 1 + len(features) * N_REPEATS}

    def scorer(model, x, y) -> float:
        calls["n"] += 1
        jobs.report_progress(job_id, 10 + int(85 * calls["n"] / calls["total"]),
                             f"Shuffling features ({calls['n']} of {calls['total']} scorings)…")
        predictions = model.predict(x)
        if classification:
            y = [str(v) for v in y]
            predictions = [str(v) for v in predictions]
        return float(score(y, predictions))

    try:
        result = permutation_importance(estimator, frame[features], frame[target], scoring=scorer,
                                        n_repeats=N_REPEATS, random_state=0)
    except Exception as exc:
        logger.info("permutation importance of %s failed: %s", version, exc)
        jobs.fail_job(job_id, error=f"The model failed on the training data ({type(exc).__name__}: "
                                    f"{str(exc)[:300]}).", message="Feature importance failed")
        return
    explainability = {
        "method": "permutation_importance",
        "rows": len(frame),
        "metric": metric,
        "repeats": N_REPEATS,
        "baseline": round(scorer_baseline(estimator, frame[features], frame[target], score, classification), 6),
        "features": sorted(
            ({"name": name, "importance": round(float(mean), 6), "std": round(float(std), 6)}
             for name, mean, std in zip(features, np.asarray(result.importances_mean),
                                        np.asarray(result.importances_std), strict=True)),
            key=lambda f: f["importance"], reverse=True),
        "computed_at": timezone.now().isoformat(),
        "job": str(job_id),
    }
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(explainability=explainability)
        audit.record("model.explained", actor=None, actor_label="explain job", obj=version,
                     details={"version": version.number, "metric": metric, "rows": len(frame),
                              "top": [f["name"] for f in explainability["features"][:3]]})
    jobs.succeed_job(job_id, result={"version": str(version.uuid), "features": len(features)},
                     message=f"Feature importance computed on {len(frame)} rows")


def scorer_baseline(estimator: _Estimator, x, y, score, classification: bool) -> float:
    predictions = estimator.predict(x)
    if classification:
        return float(score([str(v) for v in y], [str(v) for v in predictions]))
    return float(score(y, predictions))
