# ruff: noqa: F811  (pytest fixtures imported from the deployments tests share names with parameters)
"""Monitoring fixtures: a real skops model deployed to a sandbox, and prediction log rows written as the drain does."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
import pytest

from apps.deployments import services as deployments
from apps.deployments.models import Deployment, PredictionLog
from tests.deployments.conftest import (  # noqa: F401  (fixtures used by the monitoring tests)
    _fresh_serving,
    approve,
    production,
    sandbox,
    training,
    version,
    version2,
)
from tests.registry.conftest import FEATURES, _mlflow_store, mlflow_store  # noqa: F401

__all__ = ["FEATURES", "log_predictions"]


@pytest.fixture
def deployment(people, project, sandbox, version) -> Deployment:
    return deployments.deploy(project, actor=people["scientist"], name="Churn live", environment=sandbox,
                              version=version)


def log_predictions(deployment: Deployment, rows: list[dict], *, at: datetime, outputs: list | None = None,
                    per_request: int = 1, status_code: int = 200, latency_ms: float = 5.0, caller: str = "app",
                    spread: timedelta = timedelta(minutes=4), role: str = "champion", version=None,
                    seed: int = 0) -> list[PredictionLog]:
    """Write logged requests of `per_request` rows each, spaced evenly from `at` over `spread` (as the drain does).

    Returns the records (each with a fresh request id); outputs default to 0/1 by a fixed rule of the inputs."""
    rng = np.random.default_rng(seed)
    columns = list(rows[0]) if rows else FEATURES
    if outputs is None:
        outputs = [int((r.get("income") or 0) > 50_000) for r in rows]
    records = []
    chunks = [range(i, min(i + per_request, len(rows))) for i in range(0, len(rows), per_request)]
    for n, chunk in enumerate(chunks):
        created = at + spread * (n / max(len(chunks), 1))
        failed = status_code >= 400
        records.append(PredictionLog(
            record_id=uuid.uuid4(), request_id=uuid.uuid4().hex, deployment=deployment,
            model_version=version or deployment.champion, role=role, created_at=created,
            latency_ms=float(latency_ms if np.isscalar(latency_ms) else rng.choice(latency_ms)),
            status_code=status_code, caller=caller, row_count=len(chunk),
            inputs={"columns": columns, "data": [[rows[i].get(c) for c in columns] for i in chunk]},
            outputs=None if failed else [outputs[i] for i in chunk], error="boom" if failed else ""))
    return PredictionLog.objects.bulk_create(records)


def ready_reference(deployment, version=None):
    """The deployment's reference statistics computed in process (in production a job does it)."""
    from apps.monitoring import reference
    from apps.monitoring.models import ReferenceProfile

    version = version or deployment.champion
    dataset = reference.dataset_for(deployment, version)
    profile, _ = ReferenceProfile.objects.get_or_create(dataset_version=dataset, model_version=version)
    return reference.build(profile)


def customer_rows(rows: int, *, seed: int, income_shift: float = 0.0, age_shift: int = 0) -> list[dict]:
    """Rows from the training data's own distribution (tests.registry.conftest.training_frame), optionally shifted."""
    from tests.registry.conftest import training_frame

    frame = training_frame(rows=rows, seed=seed)
    frame["income"] = frame["income"] + income_shift
    frame["age"] = frame["age"] + age_shift
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k in FEATURES}
            for row in frame.to_dict("records")]
