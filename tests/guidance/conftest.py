"""Guidance fixtures: a model version as rows only (the checklist never loads a model) and its deployment."""

from __future__ import annotations

import pytest

from apps.approvals.models import ApprovalRequest, Environment, signature_digest
from apps.datasets.models import Dataset, DatasetVersion
from apps.deployments.models import Deployment
from apps.registry.models import ModelValidation, ModelVersion, RegisteredModel


@pytest.fixture
def version(people, project) -> ModelVersion:
    """A ready version with nothing of its readiness done: no owner, no intended use, no data, no evidence."""
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"])
    return ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="skops", created_by=people["scientist"],
        sha256="a" * 64, artifact_sha256="b" * 64, signature={"inputs": [{"name": "age", "type": "long"}]},
    )


@pytest.fixture
def environment(people, project) -> Environment:
    return Environment.objects.create(project=project, name="Production", slug="production", required_approvals=1)


def dataset_version(project, user) -> DatasetVersion:
    dataset = Dataset.objects.create(project=project, name="Customers", created_by=user)
    return DatasetVersion.objects.create(dataset=dataset, number=1, created_by=user, file_name="x.csv",
                                         original_filename="x.csv", format="csv", size_bytes=10, sha256="c" * 64,
                                         status=DatasetVersion.Status.READY)


def make_ready(version: ModelVersion, people, environment) -> Deployment:
    """Everything on the checklist done, the deployment included; returns the deployment."""
    model = version.model
    model.owner, model.intended_use = people["scientist"], "Prioritise retention calls"
    model.save()
    data = dataset_version(model.project, people["scientist"])
    version.training_dataset = data
    version.explainability = {"features": [{"name": "age", "importance": 0.1}]}
    version.save()
    ModelValidation.objects.create(model_version=version, dataset_version=data, verdict=ModelValidation.Verdict.PASS)
    ApprovalRequest.objects.create(
        environment=environment, model_version=version, requested_by=people["scientist"], justification="ok",
        status=ApprovalRequest.Status.APPROVED, required_approvals=1, bound_sha256=version.sha256,
        bound_artifact_sha256=version.artifact_sha256, bound_signature_sha256=signature_digest(version.signature))
    previous = ModelVersion.objects.create(model=model, number=2, status=ModelVersion.Status.READY, format="skops",
                                           sha256="d" * 64)
    return Deployment.objects.create(project=model.project, name="Churn live", slug="churn-live",
                                     environment=environment, champion=version, fallback=previous)
