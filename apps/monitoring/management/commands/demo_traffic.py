"""A week in the life of the demo deployment, with a drift from day three: what the Operations Center is for.

"Churn risk (staging)" gets seven days of requests (busier on weekdays and in office hours), scored by the real
model on customers drawn like the demo dataset's. Two days into the week a pricing campaign brings in new
customers: shorter tenure, higher monthly spend. Expensive plans now churn more, which the model never learnt, so
it gets worse at its job. Outcomes (did the customer leave?) come back for most predictions a day later.

Then the beat tasks run once, in this process: rollups, alert evaluation (the drift rule opens a warning that
names the shifted features; the demo sets its action to "retrain"), and the retraining job it starts, which
registers Churn risk v2 and asks for its approval. Everything lands in the same tables live traffic does.

Idempotent: a deployment that already has demo-week traffic is left alone unless --reset is given (which removes
only the demo week's requests and outcomes).
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from apps.accounts.models import User
from apps.deployments import predlog, protocol
from apps.deployments.models import Deployment, PredictionLog
from apps.deployments.serving import load_serving_model
from apps.monitoring import alerts, reference, rollups, services
from apps.monitoring.models import Alert, AlertRule, GroundTruth, RetrainingRun

NAME = "Churn risk (staging)"
CALLER = "retention dashboard (demo week)"
DAYS = 7
REQUESTS_PER_DAY = 900
# Ago. The retraining holds out the latest labelled rows (~1,450: a day and a half's) and learns from the rest, so
# the campaign's older days must be enough to learn from, whichever weekdays the week covers: with 3.5 days, a week
# run on a Tuesday morning left the refit almost none (it came out 5 points worse); with 5, it is 7-9 points better
# at 14 instants spread over a week.
DRIFT_AFTER_DAYS = 5
LABELLED_SHARE = 0.7
LABEL_DELAY = dt.timedelta(days=1)
SEED = 7


def customers(rows: int, rng: np.random.Generator, *, campaign: bool) -> pd.DataFrame:
    """Customers like the demo dataset's; campaign customers are newer and on pricier plans."""
    frame = pd.DataFrame({
        "age": rng.integers(18, 85, rows),
        "monthly_spend": (rng.gamma(4, 15, rows) * (1.8 if campaign else 1.0)).round(2),
        "tenure_months": rng.integers(0, 24 if campaign else 120, rows),
        "support_calls": rng.poisson(2.2 if campaign else 1.5, rows),
    })
    risk = 0.9 * (frame.tenure_months < 12) + 0.5 * (frame.support_calls > 3) - 0.004 * frame.monthly_spend
    if campaign:  # what the model never saw: expensive plans churn
        risk = risk + 0.9 * (frame.monthly_spend > 110)
    frame["churned"] = (risk + rng.normal(0, 0.25, rows) > 0.45).astype(int)
    return frame


class Command(BaseCommand):
    help = "Send a week of demo traffic (drift from day three, outcomes a day later) and run monitoring once."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Replace an earlier demo week.")
        parser.add_argument("--no-retrain", action="store_true", help="Leave the drift rule's action alone.")

    def handle(self, *args, **options):
        # The jobs this starts (reference statistics, the retraining the alert asks for) run here and now, not on a
        # worker: the demo's story is complete when the command returns, and no worker races it for the same job.
        from portal.celery import app

        eager = app.conf.task_always_eager
        app.conf.task_always_eager = True
        try:
            self._run(**options)
        finally:
            app.conf.task_always_eager = eager

    def _run(self, *, reset: bool = False, no_retrain: bool = False, **options):
        deployment = Deployment.objects.filter(name=NAME).select_related("champion", "project").first()
        if deployment is None:
            raise CommandError(f"No “{NAME}” deployment: run `make demo` (or load_demo … load_demo_deployments) "
                               "first.")
        scientist = User.objects.filter(username="scientist").first()
        if scientist is None:
            raise CommandError("No demo user “scientist”: run `manage.py load_demo` first.")
        week = PredictionLog.objects.filter(deployment=deployment, caller=CALLER)
        if week.exists() and not reset:
            self.stdout.write(f"“{NAME}” already has its demo week ({week.count():,} requests); --reset replaces it.")
            return
        if reset:
            ids = list(week.values_list("request_id", flat=True))
            GroundTruth.objects.filter(deployment=deployment, request_id__in=ids).delete()
            week.delete()
        rules = alerts.default_rules(deployment) or list(AlertRule.objects.filter(deployment=deployment))
        drift_rule = next((r for r in AlertRule.objects.filter(deployment=deployment, metric="drift_psi")), None)
        if drift_rule is not None and not no_retrain and drift_rule.action != AlertRule.Action.RETRAIN:
            alerts.update_rule(drift_rule, actor=scientist, action=AlertRule.Action.RETRAIN)
        self.stdout.write(f"{len(rules)} alert rules watch “{NAME}”.")

        now = timezone.now()
        records, truths = self._week(deployment, now)
        predlog.insert(records)
        self.stdout.write(f"Sent {len(records):,} requests over {DAYS} days (drift from "
                          f"{timezone.localtime(now - dt.timedelta(days=DRIFT_AFTER_DAYS)):%a %H:%M}).")
        labelled = [t for t in truths if t[2] <= now - LABEL_DELAY]
        for start in range(0, len(labelled), services.MAX_FEEDBACK_ITEMS):
            chunk = labelled[start:start + services.MAX_FEEDBACK_ITEMS]
            services.record_feedback(deployment, actor=scientist, source="api",
                                     items=[{"request_id": r, "row": row, "label": y} for r, row, _, y in chunk])
        self.stdout.write(f"Sent back {len(labelled):,} outcomes (a day late, for {LABELLED_SHARE:.0%} of rows).")

        reference.profile_for(deployment, deployment.champion)  # computed now if it was not yet
        buckets = rollups.run()
        changes = alerts.evaluate_all()
        self.stdout.write(f"Monitoring: {buckets:,} five-minute buckets rolled up; {changes} alert(s) opened or "
                          "resolved.")
        for alert in Alert.objects.filter(rule__deployment=deployment).open():
            self.stdout.write(f"  [{alert.get_severity_display()}] {alert.title}")
        run = RetrainingRun.objects.filter(deployment=deployment).select_related("new_version").first()
        if run is not None and run.new_version:
            self.stdout.write(f"Retraining registered {run.new_version} and asked for its approval: "
                              f"{(run.comparison or {}).get('summary', '')}")
        elif run is not None:
            self.stdout.write(self.style.WARNING(f"Retraining {run.get_status_display().lower()}: {run.error}"))

    def _week(self, deployment, now):
        rng = np.random.default_rng(SEED)
        model = load_serving_model(deployment.champion)
        names = [c["name"] for c in model.inputs]
        # When each request came: weekdays busier than weekends, office hours busier than nights.
        hours = np.arange(DAYS * 24)
        moments = [now - dt.timedelta(hours=int(h)) for h in hours]
        weights = np.array([(1.0 if m.weekday() < 5 else 0.45) *
                            (0.25 + np.exp(-((timezone.localtime(m).hour - 13) ** 2) / 18)) for m in moments])
        total = DAYS * REQUESTS_PER_DAY
        offsets = (rng.choice(hours, size=total, p=weights / weights.sum()) + rng.random(total)) * 3600
        starts = np.sort(now.timestamp() - offsets)
        sizes = rng.choice([1, 1, 1, 1, 1, 2, 3], size=total)
        drift_at = (now - dt.timedelta(days=DRIFT_AFTER_DAYS)).timestamp()
        campaign = np.repeat(starts >= drift_at, sizes)
        before = customers(int((~campaign).sum()), rng, campaign=False)
        after = customers(int(campaign.sum()), rng, campaign=True)
        frame = pd.concat([before, after], ignore_index=True)
        frame = frame.iloc[np.argsort(np.concatenate([np.flatnonzero(~campaign), np.flatnonzero(campaign)]),
                                      kind="stable")].reset_index(drop=True)
        checked = protocol.check_rows(protocol.Table(names, frame[names].astype(object).values.tolist()),
                                      model.inputs, max_rows=len(frame))
        predictions = protocol.predictions_list(model.predict(checked))
        records, truths, first = [], [], 0
        for started, size in zip(starts, sizes, strict=True):
            rows = slice(first, first + int(size))
            first += int(size)
            request_id = uuid.uuid4().hex
            latency = float(rng.lognormal(1.1, 0.4)) + (float(rng.uniform(40, 200)) if rng.random() < 0.01 else 0)
            if rng.random() < 0.015:  # a client bug now and then
                records.append({**predlog.new_record(request_id=request_id, deployment_id=deployment.pk,
                                                     version_id=model.version_id, latency_ms=round(latency, 3),
                                                     status=400, caller=CALLER, caller_id=None,
                                                     error="column 'tenure_months' is missing"), "t": float(started)})
                continue
            data = frame[names].iloc[rows].astype(object).values.tolist()
            records.append({**predlog.new_record(request_id=request_id, deployment_id=deployment.pk,
                                                 version_id=model.version_id, latency_ms=round(latency, 3),
                                                 status=200, caller=CALLER, row_count=len(data),
                                                 inputs={"columns": names, "data": data},
                                                 outputs=predictions[rows]), "t": float(started)})
            moment = dt.datetime.fromtimestamp(float(started), tz=dt.UTC)
            for row, label in enumerate(frame["churned"].iloc[rows].tolist()):
                if rng.random() < LABELLED_SHARE:
                    truths.append((request_id, row, moment, int(label)))
        return records, truths
