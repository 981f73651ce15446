"""Approval fixtures: a ready model version (rows only: approvals never load the model) and two environments."""

from __future__ import annotations

import pytest

from apps.accounts.models import Membership
from apps.approvals import services
from apps.registry.models import ModelVersion, RegisteredModel
from tests.conftest import make_user

ANSWERS = {"intended_use": "Retention calls", "affected_people": "Customers", "fairness_checked": True,
           "fallback_plan": "Agents call everyone as before"}


@pytest.fixture
def approver2(people, project):
    user = make_user("approver2")
    Membership.objects.create(user=user, project=project, role=Membership.Role.APPROVER)
    return user


@pytest.fixture
def version(people, project):
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"],
                                           intended_use="Prioritise retention calls", risk_tier="medium")
    return ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="skops", created_by=people["scientist"],
        sha256="a" * 64, artifact_sha256="b" * 64, mlflow_model_uri="models:/portal.churn/1",
        signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []}, metrics={"accuracy": 0.9},
    )


@pytest.fixture
def staging(people, project):
    return services.create_environment(project, actor=people["admin"], name="staging", required_approvals=1)


@pytest.fixture
def production(people, project):
    return services.create_environment(project, actor=people["admin"], name="production", required_approvals=2,
                                       approver_roles=["approver"], high_risk_extra_approval=True,
                                       approval_valid_days=30)
