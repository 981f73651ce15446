"""Deployment fixtures: a real imported model (skops tree), environments, approvals, and models that misbehave."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.pyfunc import PythonModel

from apps.approvals import services as approvals
from apps.deployments import serving
from apps.registry import mlflow_store
from apps.registry import services as registry
from apps.registry.models import ModelVersion
from tests.registry.conftest import FEATURES, run_import, skops_bytes, training_frame, upload
from tests.registry.test_evidence import profiled_training_data

__all__ = ["FEATURES", "training_frame"]

ANSWERS = {"intended_use": "Retention calls", "affected_people": "Customers", "fairness_checked": True,
           "fallback_plan": "Agents call everyone as before"}


@pytest.fixture(autouse=True)
def _fresh_serving(settings, tmp_path):
    """No test inherits another's cached callers, routes or models, or its prediction spool."""
    settings.VAR_DIR = tmp_path / "var"
    settings.REDIS_URL = ""
    serving.forget_all()
    from apps.deployments import predlog

    predlog._redis = None
    yield
    serving.forget_all()


def import_skops(project, actor, capture, *, name="Churn", model=None, training=None) -> ModelVersion:
    """A skops tree imported through the registry (signature from its profiled training data), ready to serve."""
    training = training or profiled_training_data(project, actor, capture)
    with capture(execute=False):
        version = registry.start_import(
            project, actor=actor, name=name, uploaded=upload("tree.skops", skops_bytes(model)), fmt="skops",
            lineage={"training_dataset": str(training.uuid), "target_column": "churned"},
            model_fields={"task_type": "classification"})
    version = run_import(version)
    assert version.status == ModelVersion.Status.READY, version.error
    return version


@pytest.fixture
def training(people, project, django_capture_on_commit_callbacks):
    return profiled_training_data(project, people["scientist"], django_capture_on_commit_callbacks)


@pytest.fixture
def version(people, project, training, django_capture_on_commit_callbacks) -> ModelVersion:
    return import_skops(project, people["scientist"], django_capture_on_commit_callbacks, training=training)


@pytest.fixture
def version2(people, project, version, django_capture_on_commit_callbacks) -> ModelVersion:
    from sklearn.tree import DecisionTreeClassifier

    frame = training_frame(seed=5)
    model = DecisionTreeClassifier(max_depth=1, random_state=0).fit(frame[FEATURES], frame["churned"])
    second = import_skops(project, people["scientist"], django_capture_on_commit_callbacks, model=model,
                          training=version.training_dataset)
    assert second.number == 2
    return second


@pytest.fixture
def sandbox(people, project):
    """Not gated: scientists deploy there without approval."""
    return approvals.create_environment(project, actor=people["admin"], name="sandbox", required_approvals=0)


@pytest.fixture
def production(people, project):
    return approvals.create_environment(project, actor=people["admin"], name="production", required_approvals=1,
                                        approver_roles=["approver"])


def approve(version, environment, people, capture=None):
    request = approvals.request_approval(version, environment, actor=people["scientist"], justification="Ready",
                                         answers=ANSWERS)
    approvals.decide(request, actor=people["approver"], verdict="approve", comment="Evidence reviewed")
    return request


# --- Models that misbehave (stored directly: they are our own test code, not uploads) ---------------------


class RaisingModel(PythonModel):
    def predict(self, context, model_input, params=None):
        raise ValueError("the model's own bug")


class SlowModel(PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(float(model_input["age"].iloc[0]) / 10)
        return [1] * len(model_input)


def custom_version(project, actor, python_model, tmp_path: Path, *, name: str) -> ModelVersion:
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    from apps.registry.models import RegisteredModel

    frame = training_frame()[FEATURES]
    directory = tmp_path / name
    mlflow_store.configure()
    mlflow.pyfunc.save_model(str(directory), python_model=python_model(),
                             signature=infer_signature(frame, [1] * len(frame)))
    model = RegisteredModel.objects.create(project=project, name=name, slug=name.lower(), created_by=actor)
    stored = mlflow_store.store_directory(directory, registered_name=f"portal.{model.slug}",
                                          project_slug=project.slug, tags={})
    return ModelVersion.objects.create(
        model=model, number=1, status=ModelVersion.Status.READY, format="mlflow", created_by=actor,
        sha256="c" * 64, artifact_sha256=stored.artifact_sha256, mlflow_model_uri=stored.model_uri,
        signature={"inputs": [{"name": c, "type": "long" if c != "income" else "double"} for c in FEATURES],
                   "outputs": []})
