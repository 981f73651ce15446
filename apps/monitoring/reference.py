"""Reference statistics: the bins every rollup counts into, computed once per (dataset version, model version).

The reference is the deployment's chosen dataset version, else the version's training dataset. Features are
binned from up to REFERENCE_ROWS rows of its Parquet copy; predictions from the model's own answers on up to
PREDICTION_ROWS of them, so "prediction drift" compares like with like.
"""

from __future__ import annotations

import logging

import numpy as np
from django.db import IntegrityError, transaction

from apps.core import storage
from apps.core.models import Job
from apps.core.services import create_job, report_progress, start_job, succeed_job
from apps.monitoring import drift
from apps.monitoring.models import MonitoringSettings, ReferenceProfile

logger = logging.getLogger(__name__)

REFERENCE_ROWS = 200_000
PREDICTION_ROWS = 5_000


def settings_for(deployment) -> MonitoringSettings:
    found = getattr(deployment, "_monitoring_settings", None)
    if found is None:
        found, _ = MonitoringSettings.objects.get_or_create(deployment=deployment)
        deployment._monitoring_settings = found
    return found


def dataset_for(deployment, version):
    """The dataset version drift is measured against, or None (then only data quality without ranges is shown)."""
    chosen = settings_for(deployment).reference_dataset
    if chosen is not None and chosen.parquet_name:
        return chosen
    training = version.training_dataset
    return training if training is not None and training.parquet_name else None


def profile_for(deployment, version, *, start: bool = True) -> ReferenceProfile | None:
    """The ready reference for this deployment and version; when there is none yet, its computation is queued
    (once) and None returned."""
    dataset = dataset_for(deployment, version)
    if dataset is None:
        return None
    profile = ReferenceProfile.objects.filter(dataset_version=dataset, model_version=version).first()
    if profile is None and start:
        profile = _start(dataset, version, project=deployment.project)
    return profile if profile is not None and profile.status == ReferenceProfile.Status.READY else None


def _start(dataset, version, *, project) -> ReferenceProfile | None:
    from apps.monitoring.tasks import reference_profile_task

    try:
        with transaction.atomic():
            profile = ReferenceProfile.objects.create(dataset_version=dataset, model_version=version)
            profile.job = create_job("reference_profile", actor=None, project=project,
                                     params={"profile": profile.pk},
                                     enqueue=reference_profile_task)
            profile.save(update_fields=["job"])
    except IntegrityError:  # another process started it first
        return ReferenceProfile.objects.filter(dataset_version=dataset, model_version=version).first()
    return profile


def compute(job_id: str) -> None:
    """The job: read the reference rows, bin every input column and the model's predictions, store them, and
    recount the rollups that were made before the reference existed."""
    if not start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    profile = ReferenceProfile.objects.select_related("dataset_version", "model_version").get(pk=job.params["profile"])
    try:
        build(profile, progress=lambda p, m: report_progress(job_id, p, m))
    except Exception as exc:  # a broken file or model: the profile says why; monitoring goes on without drift
        logger.exception("reference statistics failed for %s", profile)
        ReferenceProfile.objects.filter(pk=profile.pk).update(status=ReferenceProfile.Status.FAILED,
                                                               error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    from apps.monitoring import rollups

    rebuilt = rollups.rebuild_without_reference(profile)
    succeed_job(job_id, result={"features": len(profile.features), "rows": profile.rows, "rollups_recounted": rebuilt},
                message=f"Reference statistics of {len(profile.features)} features from {profile.rows:,} rows")


def build(profile: ReferenceProfile, *, progress=lambda p, m: None) -> ReferenceProfile:
    import pyarrow.parquet as pq

    version = profile.model_version
    names = version.input_names
    with storage.open_stream(profile.dataset_version.parquet_name) as handle:
        parquet = pq.ParquetFile(handle)
        present = [n for n in names if n in parquet.schema_arrow.names]
        table = _first_rows(parquet, present, REFERENCE_ROWS)
    progress(30, f"Binning {len(present)} features")
    frame = table.to_pandas()
    features = {name: drift.reference_column(frame[name].to_numpy()) for name in present}
    progress(70, "Scoring a sample with the model")
    predictions = _prediction_reference(version, frame, names)
    profile.features = features
    profile.predictions = predictions
    profile.rows = len(frame)
    profile.status = ReferenceProfile.Status.READY
    profile.error = ""
    profile.save(update_fields=["features", "predictions", "rows", "status", "error"])
    return profile


def _first_rows(parquet, columns: list[str], limit: int):
    import pyarrow as pa

    batches, total = [], 0
    for batch in parquet.iter_batches(batch_size=65_536, columns=columns):
        batches.append(batch)
        total += batch.num_rows
        if total >= limit:
            break
    schema = pa.schema([parquet.schema_arrow.field(name) for name in columns])
    return pa.Table.from_batches(batches, schema=schema).slice(0, limit) if batches else schema.empty_table()


def _prediction_reference(version, frame, names: list[str]) -> dict:
    """The model's answers on a sample of the reference, binned like a feature (empty when it cannot score them)."""
    if any(n not in frame.columns for n in names) or not len(frame):
        return {}
    from apps.deployments import protocol
    from apps.deployments.serving import load_serving_model

    sample = frame[names].iloc[:PREDICTION_ROWS]
    try:
        model = load_serving_model(version)
        checked = protocol.check_rows(protocol.Table(names, sample.astype(object).values.tolist()), model.inputs,
                                      max_rows=len(sample))
        outputs = protocol.predictions_list(model.predict(checked))
    except Exception:  # the model cannot score its own training rows: say nothing rather than guess
        logger.warning("reference predictions failed for %s", version, exc_info=True)
        return {}
    return drift.reference_column(np.asarray(scalar_predictions(outputs), dtype=object))


def scalar_predictions(outputs: list) -> list:
    """One value per row: a label or a number; for a probability vector, the positive (last) class's score."""
    values = []
    for value in outputs:
        if isinstance(value, dict):
            value = next(iter(value.values()), None) if len(value) == 1 else None
        if isinstance(value, list | tuple):
            value = value[-1] if value else None
        values.append(value)
    return values
