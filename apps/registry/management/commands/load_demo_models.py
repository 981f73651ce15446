"""Add demo content to the demo project: a profiled "Customer churn" dataset and a "Churn risk" model trained on it.

Idempotent (skips what exists). Runs the profiling and import jobs in this process, so the demo is ready
as soon as the portal starts; run `load_demo` first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Project, User
from apps.core.models import Job
from apps.datasets import services as dataset_services
from apps.datasets.models import Dataset
from apps.registry import services
from apps.registry.models import RegisteredModel

FEATURES = ["age", "monthly_spend", "tenure_months", "support_calls"]


def churn_frame(rows: int = 2000, seed: int = 2026) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "customer_id": np.arange(1, rows + 1),
        "age": rng.integers(18, 85, rows),
        "monthly_spend": rng.gamma(4, 15, rows).round(2),
        "tenure_months": rng.integers(0, 120, rows),
        "support_calls": rng.poisson(1.5, rows),
        "region": rng.choice(["north", "south", "east", "west"], rows),
    })
    risk = 0.9 * (frame.tenure_months < 12) + 0.5 * (frame.support_calls > 3) - 0.004 * frame.monthly_spend
    frame["churned"] = (risk + rng.normal(0, 0.25, rows) > 0.45).astype(int)
    return frame


class Command(BaseCommand):
    help = "Add a profiled demo dataset and a demo model (skops, with lineage) to the demo project."

    def handle(self, *args, **options):
        project = Project.objects.filter(slug="demo").first()
        scientist = User.objects.filter(username="scientist").first()
        if project is None or scientist is None:
            raise CommandError("Run `manage.py load_demo` first: it creates the demo project and users.")
        frame = churn_frame()
        dataset = Dataset.objects.filter(project=project, name="Customer churn").first()
        if dataset is None:
            csv = frame.to_csv(index=False).encode()
            version, _ = dataset_services.upload(
                project, actor=scientist, name="Customer churn", description="Demo customers, one row each",
                uploaded=SimpleUploadedFile("customer_churn.csv", csv),
            )
            dataset_services.profile_version(str(version.profile_job_id))
            self.stdout.write("Demo dataset “Customer churn” v1 uploaded and profiled.")
            dataset = version.dataset
        training = dataset.versions.order_by("-number").first()
        if RegisteredModel.objects.filter(project=project, name="Churn risk").exists():
            self.stdout.write("Demo model “Churn risk” already exists.")
            return
        import skops.io as sio
        from sklearn.ensemble import RandomForestClassifier

        model = RandomForestClassifier(n_estimators=40, max_depth=5, random_state=0)
        model.fit(frame[FEATURES], frame["churned"])
        accuracy = float(model.score(frame[FEATURES], frame["churned"]))
        version = services.start_import(
            project,
            actor=scientist,
            name="Churn risk",
            uploaded=SimpleUploadedFile("churn_risk.skops", sio.dumps(model)),
            fmt="skops",
            model_fields={
                "description": "Flags customers likely to leave in the next quarter.",
                "intended_use": "Prioritise retention calls. A person reviews every flagged customer.",
                "out_of_scope_uses": "Pricing, credit or any decision made without a person.",
                "task_type": "classification",
                "risk_tier": "medium",
                "owner": scientist,
            },
            lineage={
                "training_dataset": str(training.uuid),
                "target_column": "churned",
                "code_repository": "https://git.example.org/demo/churn-risk",
                "code_commit": "3f9c2ab7d41e0c5b9a8f6e2d1c0b9a8f7e6d5c4b",
                "params": {"n_estimators": "40", "max_depth": "5"},
                "metrics": {"training_accuracy": round(accuracy, 4)},
            },
            description="First version, trained on Customer churn v1.",
        )
        services.import_version(str(version.import_job_id))
        version.refresh_from_db()
        job = Job.objects.get(pk=version.import_job_id)
        self.stdout.write(f"Demo model “Churn risk” v1: {version.get_status_display()} ({job.message}).")
