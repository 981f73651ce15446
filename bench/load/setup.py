"""The load test's data and its prediction-log check (run by bench/bench_load.py in the portal's environment).

Default: after the demo loaders, through the real services, in the demo project:
- the serving benchmark's model (bench_serving.py's: a 100-tree random forest on scikit-learn's breast-cancer
  data, skops) imported with an input example (so it has a signature) and deployed to an ungated "load-test"
  environment, with one deployment key per prediction client (the per-key rate limit stays the default);
- N people (viewers, scientists and approvers, members of the demo project) sharing one password, each with a
  project API token;
- the URLs they visit, found in the database (models, versions, datasets, approvals, deployments).
Writes all of it as JSON to --out (the plan the locustfile reads).

--static-fingerprint: print a hash of what collectstatic would collect.

--count-log: wait (up to --timeout s) until beat has drained the prediction log, then print the benchmark
deployment's row counts as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import django

django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402

from apps.accounts import services as accounts  # noqa: E402
from apps.accounts.models import Membership, Project, User  # noqa: E402

PROJECT = "demo"
DEPLOYMENT = "Load test forest"
# How many rows a call scores: mostly one, now and then a small batch (as in load_demo_deployments).
PREDICT_SIZES = [1, 1, 1, 1, 2, 3, 5, 10, 25]
ROLES = [Membership.Role.VIEWER] * 6 + [Membership.Role.SCIENTIST] * 3 + [Membership.Role.APPROVER]


def forest():
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    data = load_breast_cancer(as_frame=True)
    features = data.frame.drop(columns="target")
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(features, data.target)
    return sio.dumps(model), features


def deploy_forest(project, admin, keys: int) -> dict:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.approvals import services as approvals
    from apps.deployments import services as deployments
    from apps.registry import services as registry

    blob, features = forest()
    environment = approvals.create_environment(project, actor=admin, name="load-test", required_approvals=0)
    example = {"columns": list(features.columns), "data": features.head(5).to_numpy().tolist()}
    version = registry.start_import(project, actor=admin, name="Cancer forest", fmt="skops",
                                    lineage={"input_example": example},
                                    uploaded=SimpleUploadedFile("forest.skops", blob),
                                    model_fields={"task_type": "classification"})
    registry.import_version(str(version.import_job_id))  # what the Celery task runs (a no-op if it already ran)
    version.refresh_from_db()
    if version.status != "ready" or not (version.signature or {}).get("inputs"):
        sys.exit(f"the forest import failed or has no signature: {version.status} {version.error}")
    deployment = deployments.deploy(project, actor=admin, name=DEPLOYMENT, environment=environment, version=version)
    tokens = [deployments.create_token(deployment, actor=admin, name=f"load client {i + 1}")[1] for i in range(keys)]
    return {"predict_slug": deployment.slug, "predict_keys": tokens, "predict_columns": list(features.columns),
            "predict_rows": features.to_numpy().tolist(), "predict_sizes": PREDICT_SIZES,
            "predict_model": "RandomForestClassifier(n_estimators=100), breast cancer (569 x 30), skops"}


def people(project, admin, count: int, password: str) -> list[dict]:
    hashed = make_password(password)  # once: hashing it 50 times would only slow the setup down
    out = []
    for i in range(count):
        user = User.objects.create(username=f"load{i + 1:03d}", email=f"load{i + 1:03d}@load.portal.local",
                                   password=hashed)
        accounts.add_member(project, actor=admin, user=user, role=ROLES[i % len(ROLES)])
        _, key = accounts.create_token(actor=user, name="load test script", project=project)
        out.append({"username": user.username, "token": key})
    return out


def urls(project) -> tuple[list, list]:
    from apps.approvals.models import ApprovalRequest
    from apps.datasets.models import Dataset
    from apps.deployments.models import Deployment
    from apps.registry.models import ModelVersion, RegisteredModel

    ui = [("home (Operations Center)", "/"), ("project", f"/projects/{project.slug}/"),
          ("model list", f"/projects/{project.slug}/models/"), ("datasets", f"/projects/{project.slug}/datasets/"),
          ("approvals", "/approvals/"), ("audit log", "/audit/"), ("deployments", "/deployments/"),
          ("alerts", "/alerts/"), ("notifications", "/notifications/")]
    api = [("projects", "/api/v1/projects/"), ("project", f"/api/v1/projects/{project.slug}/"),
           ("models", "/api/v1/models/"), ("datasets", "/api/v1/datasets/"), ("approvals", "/api/v1/approvals/"),
           ("environments", "/api/v1/environments/"), ("deployments", "/api/v1/deployments/"),
           ("audit events", "/api/v1/audit/events/"), ("jobs", "/api/v1/jobs/"),
           ("notifications", "/api/v1/notifications/"), ("alerts", "/api/v1/alerts/")]
    for model in RegisteredModel.objects.filter(project=project):
        ui.append(("model", f"/models/{model.slug}/"))
        api += [("model", f"/api/v1/models/{model.slug}/"),
                ("model versions", f"/api/v1/models/{model.slug}/versions/")]
    for version in ModelVersion.objects.filter(model__project=project).select_related("model"):
        ui.append(("model card", f"/models/{version.model.slug}/v{version.number}/"))
        api.append(("model version", f"/api/v1/model-versions/{version.uuid}/"))
    for dataset in Dataset.objects.filter(project=project).prefetch_related("versions"):
        ui.append(("dataset", f"/datasets/{dataset.uuid}/"))
        api += [("dataset", f"/api/v1/datasets/{dataset.uuid}/"),
                ("dataset versions", f"/api/v1/datasets/{dataset.uuid}/versions/")]
        for version in dataset.versions.all():
            ui.append(("dataset version", f"/datasets/{dataset.uuid}/v{version.number}/"))
    for approval in ApprovalRequest.objects.filter(model_version__model__project=project):
        ui.append(("approval", f"/approvals/{approval.uuid}/"))
        api.append(("approval", f"/api/v1/approvals/{approval.uuid}/"))
    for deployment in Deployment.objects.filter(project=project):
        s = deployment.slug
        ui += [("deployment", f"/deployments/{s}/"), ("deployment monitoring", f"/deployments/{s}/monitoring/"),
               ("deployment predictions", f"/deployments/{s}/predictions/")]
        api += [("deployment", f"/api/v1/deployments/{s}/"),
                ("deployment history", f"/api/v1/deployments/{s}/history/"),
                ("deployment predictions", f"/api/v1/deployments/{s}/predictions/"),
                ("deployment metrics", f"/api/v1/deployments/{s}/metrics/")]
    return ui, api


def count_log(plan: dict, timeout: float) -> dict:
    from apps.deployments import predlog
    from apps.deployments.models import Deployment, PredictionLog

    deadline = time.monotonic() + timeout
    pending = predlog.pending()
    while pending and time.monotonic() < deadline:  # beat's drain task does the work; this only watches
        time.sleep(1)
        pending = predlog.pending()
    deployment = Deployment.objects.get(slug=plan["predict_slug"])
    rows = PredictionLog.objects.filter(deployment=deployment)
    return {"pending": pending, "rows": rows.count(), "rows_200": rows.filter(status_code=200).count(),
            "distinct_requests": rows.values("request_id").distinct().count()}


def static_fingerprint() -> str:
    """What collectstatic would read (every file the finders list, with its size and time) and the libraries'
    versions, hashed: the driver reuses collected static files while this stays the same (collecting them
    compresses ~1,200 files, minutes on a busy machine)."""
    import hashlib
    import os
    from importlib.metadata import version

    from django.contrib.staticfiles.finders import get_finders

    digest = hashlib.sha256()
    for name in ("django", "whitenoise", "plotly", "djangorestframework", "drf-spectacular-sidecar"):
        digest.update(f"{name}={version(name)}\n".encode())
    entries = []
    for finder in get_finders():
        for path, storage in finder.list([]):
            stat = os.stat(storage.path(path))
            entries.append(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}")
    digest.update("\n".join(sorted(entries)).encode())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--static-fingerprint", action="store_true")
    parser.add_argument("--browsers", type=int, default=50)
    parser.add_argument("--predict-keys", type=int, default=20)
    parser.add_argument("--password", default="")
    parser.add_argument("--count-log", action="store_true")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    if args.static_fingerprint:
        print(static_fingerprint())
        return
    if args.count_log:
        with open(args.out) as handle:
            print(json.dumps(count_log(json.load(handle), args.timeout)))
        return
    project = Project.objects.get(slug=PROJECT)
    admin = User.objects.get(username="admin")
    plan = deploy_forest(project, admin, max(1, args.predict_keys))
    plan["browsers"] = people(project, admin, max(1, args.browsers), args.password)
    plan["password"] = args.password
    plan["ui"], plan["api"] = urls(project)
    with open(args.out, "w") as handle:
        json.dump(plan, handle)
    print(f"{len(plan['ui'])} page URLs, {len(plan['api'])} API URLs, deployment {plan['predict_slug']}")


if __name__ == "__main__":
    main()
