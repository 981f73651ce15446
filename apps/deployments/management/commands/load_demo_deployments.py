"""Deploy the demo model to staging and give it a day of prediction history: "Churn risk" v1 (approved for staging
by the approvals demo) becomes the deployment "Churn risk (staging)", deployed by `scientist`; then a few hundred
requests over the last 24 hours are scored with the real model on real rows of the demo "Customer churn" dataset
and written to the prediction log, with a few refused requests and varying latency.

Idempotent: an existing deployment is kept, and history is only added to a deployment that has none. Run
`load_demo`, `load_demo_models` and `load_demo_approvals` first.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.accounts.models import Project, User
from apps.approvals.models import Environment
from apps.core import storage
from apps.datasets.models import DatasetVersion
from apps.deployments import predlog, protocol, services
from apps.deployments.models import Deployment
from apps.deployments.serving import load_serving_model
from apps.registry.models import ModelVersion

NAME = "Churn risk (staging)"
REQUESTS = 320
SEED = 2026
# Who calls it: the retention dashboard through a deployment token most of the time, people trying it now and then.
CALLERS = [("scientist", "retention dashboard", 0.78), ("scientist", "", 0.12), ("viewer", "", 0.10)]


class Command(BaseCommand):
    help = "Deploy the demo Churn risk v1 to staging and log a day of realistic predictions for it."

    def handle(self, *args, **options):
        project = Project.objects.filter(slug="demo").first()
        users = {u.username: u for u in User.objects.filter(username__in=["scientist", "viewer"])}
        if project is None or len(users) < 2:
            raise CommandError("Run `manage.py load_demo` first: it creates the demo project and users.")
        deployment = Deployment.objects.filter(project=project, name=NAME).first()
        if deployment is None:
            deployment = self._deploy(project, users["scientist"])
            if deployment is None:
                return
        else:
            self.stdout.write(f"Demo deployment “{NAME}” already exists.")
        if deployment.predictions.exists():
            self.stdout.write(f"“{NAME}” already has {deployment.predictions.count()} logged predictions.")
            return
        self._history(deployment, users)

    def _deploy(self, project, scientist) -> Deployment | None:
        version = ModelVersion.objects.filter(model__project=project, model__name="Churn risk", number=1).first()
        staging = Environment.objects.filter(project=project, slug="staging").first()
        if version is None or staging is None:
            self.stdout.write(self.style.WARNING(
                "No demo deployment: run `load_demo_models` and `load_demo_approvals` first (Churn risk v1 must be "
                "approved for staging)."))
            return None
        reason = services.refusal(version, staging)
        if reason:
            self.stdout.write(self.style.WARNING(f"No demo deployment: {reason}"))
            return None
        deployment = services.deploy(project, actor=scientist, name=NAME, environment=staging, version=version,
                                     description="Churn risk scores for the retention team's staging trial.")
        self.stdout.write(f"Demo deployment “{NAME}” serving Churn risk v1 in staging "
                          f"(/api/v1/deployments/{deployment.slug}/invocations).")
        return deployment

    def _rows(self, deployment) -> pd.DataFrame:
        """The demo dataset's rows (its columnar copy), as the customers the dashboard scores."""
        version = deployment.champion.training_dataset or DatasetVersion.objects.filter(
            dataset__project=deployment.project, dataset__name="Customer churn").order_by("-number").first()
        if version is None or not version.parquet_name:
            raise CommandError("The demo dataset “Customer churn” is missing or not profiled: run load_demo_models.")
        with storage.open_stream(version.parquet_name) as handle:
            return pd.read_parquet(handle)

    def _history(self, deployment: Deployment, users: dict) -> None:
        rng = np.random.default_rng(SEED)
        model = load_serving_model(deployment.champion)
        names = [c["name"] for c in model.inputs]
        customers = self._rows(deployment)[names]
        now = time.time()
        # Office hours are busier: weight each of the last 24 hours by a day curve, then spread within the hour.
        hours_ago = np.arange(24)
        local_hour = (timezone.localtime().hour - hours_ago) % 24
        weights = 0.25 + np.exp(-((local_hour - 13) ** 2) / 18)
        starts = now - (rng.choice(hours_ago, size=REQUESTS, p=weights / weights.sum()) + rng.random(REQUESTS)) * 3600
        records, errors, scored = [], 0, 0
        for started in np.sort(starts):
            username, token, _ = CALLERS[rng.choice(len(CALLERS), p=[c[2] for c in CALLERS])]
            caller = f"{username} ({token})" if token else username
            size = int(rng.choice([1, 1, 1, 1, 2, 3, 5, 10, 25]))
            sample = customers.iloc[rng.choice(len(customers), size=size, replace=False)]
            table = protocol.Table(names, sample.astype(object).values.tolist())
            if rng.random() < 0.04:  # a client bug: a column left out or a number sent as text
                table = self._broken(table, rng)
            base = dict(request_id=uuid.uuid4().hex, deployment_id=deployment.pk, version_id=model.version_id,
                        caller=caller, caller_id=users[username].pk)
            clock = time.perf_counter()
            try:
                frame = protocol.check_rows(table, model.inputs, max_rows=deployment.effective_max_rows)
            except protocol.PayloadError as exc:
                errors += 1
                latency = (time.perf_counter() - clock) * 1000 + float(rng.lognormal(0, 0.3))
                records.append({**predlog.new_record(**base, latency_ms=round(latency, 3), status=exc.status,
                                                     error=exc.message), "t": float(started)})
                continue
            predictions = protocol.predictions_list(model.predict(frame))
            # What the caller waited for: the model's own time plus the request's handling, with a rare slow one.
            latency = (time.perf_counter() - clock) * 1000 + float(rng.lognormal(0.6, 0.35))
            if rng.random() < 0.02:
                latency += float(rng.uniform(40, 250))
            scored += size
            records.append({**predlog.new_record(**base, latency_ms=round(latency, 3), status=200, row_count=size,
                                                 inputs={"columns": table.columns, "data": table.rows},
                                                 outputs=predictions), "t": float(started)})
        predlog.insert(records)
        first = timezone.localtime(timezone.now() - timedelta(seconds=now - float(starts.min())))
        self.stdout.write(f"Demo prediction log for “{deployment.name}”: {len(records)} requests since "
                          f"{first:%Y-%m-%d %H:%M} ({scored} rows scored, {errors} refused as bad input).")

    @staticmethod
    def _broken(table: protocol.Table, rng) -> protocol.Table:
        rows = [list(row) for row in table.rows]
        column = int(rng.integers(len(table.columns)))
        if rng.random() < 0.5:
            return protocol.Table([c for i, c in enumerate(table.columns) if i != column],
                                  [[v for i, v in enumerate(row) if i != column] for row in rows])
        rows[0][column] = str(rows[0][column])
        return protocol.Table(table.columns, rows)
