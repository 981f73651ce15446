"""Closed-loop retraining (human in the loop): `service` starts and runs the job, `data` gathers the labelled rows,
splits the holdout and compares champion and challenger."""

from apps.monitoring.retraining.data import comparison_rows
from apps.monitoring.retraining.service import (
    Refused,
    latest_runs,
    retrainability,
    run,
    runs_of,
    start_retraining,
    start_scheduled,
)

__all__ = ["Refused", "comparison_rows", "latest_runs", "retrainability", "run", "runs_of", "start_retraining",
           "start_scheduled"]
