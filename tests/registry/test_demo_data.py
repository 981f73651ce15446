"""`make demo`'s data commands: a profiled dataset, an imported model, environments and its approval story."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.approvals.models import ApprovalRequest, Environment
from apps.datasets.models import DatasetVersion
from apps.registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_demo_data_loads_and_loading_again_changes_nothing():
    for _ in range(2):
        for command in ("load_demo", "load_demo_models", "load_demo_approvals"):
            call_command(command, stdout=io.StringIO())
    dataset = DatasetVersion.objects.get(dataset__name="Customer churn")
    assert dataset.status == "ready" and dataset.row_count == 2000
    version = ModelVersion.objects.get(model__name="Churn risk")
    assert version.status == "ready" and version.training_dataset == dataset and version.mlflow_model_uri
    assert [c["name"] for c in version.signature["inputs"]] == ["age", "monthly_spend", "tenure_months",
                                                                 "support_calls"]
    assert set(Environment.objects.values_list("slug", flat=True)) == {"staging", "production"}
    statuses = dict(ApprovalRequest.objects.values_list("environment__slug", "status"))
    assert statuses == {"staging": "approved", "production": "pending"}
