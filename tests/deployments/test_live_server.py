"""The endpoint over real HTTP: MLflow's own client-side payload helpers, and a rollout under load."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from apps.accounts import services as account_services
from apps.deployments import services
from apps.registry.evidence import load_predictor
from tests.deployments.conftest import FEATURES, training_frame

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served(jobs_stay_in_process, people, project, version, sandbox):
    deployment = services.deploy(project, actor=people["scientist"], name="Churn scoring", environment=sandbox,
                                 version=version)
    _, key = account_services.create_token(actor=people["viewer"], name="client")
    return deployment, {"Authorization": f"Token {key}"}


def test_mlflow_payload_helpers_get_the_raw_models_predictions(live_server, served, version):
    from mlflow.models import convert_input_example_to_serving_input

    deployment, headers = served
    endpoint = f"{live_server.url}/api/v1/deployments/{deployment.slug}/invocations"
    frame = training_frame(rows=50, seed=21)[FEATURES]
    want = load_predictor(version).get_raw_model().predict(frame).tolist()
    bodies = [
        convert_input_example_to_serving_input(frame),  # what `mlflow models` tooling sends
        '{"dataframe_split": ' + frame.to_json(orient="split", index=False) + "}",  # pandas' own split JSON
        '{"dataframe_records": ' + frame.to_json(orient="records") + "}",
    ]
    for body in bodies:
        response = requests.post(endpoint, data=body, headers={**headers, "Content-Type": "application/json"},
                                 timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": want}
        assert len(response.headers["X-Request-ID"]) == 32
    response = requests.post(endpoint, data=frame.to_csv(index=False),
                             headers={**headers, "Content-Type": "text/csv"}, timeout=30)
    assert response.json() == {"predictions": want}


def test_a_rollout_and_a_rollback_under_load_fail_no_request(live_server, served, people, version, version2):
    deployment, headers = served
    endpoint = f"{live_server.url}/api/v1/deployments/{deployment.slug}/invocations"
    body = '{"dataframe_split": ' + training_frame(rows=5)[FEATURES].to_json(orient="split", index=False) + "}"
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer():
        with requests.Session() as session:
            while not stop.is_set():
                response = session.post(endpoint, data=body, timeout=30,
                                        headers={**headers, "Content-Type": "application/json"})
                statuses.append(response.status_code)
                versions.append(response.headers.get("X-Model-Version", ""))

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        time.sleep(0.5)
        services.promote(deployment, version2, actor=people["scientist"], reason="v2 is better")
        deadline = time.monotonic() + 15
        while not versions or not versions[-1].endswith("v2"):
            assert time.monotonic() < deadline, "the new champion never took over"
            time.sleep(0.05)
        services.rollback(deployment, actor=people["admin"], reason="v2 misbehaves")
        deadline = time.monotonic() + 15
        while not versions[-1].endswith("v1"):
            assert time.monotonic() < deadline, "the rollback never took effect"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert {v.rsplit(" ", 1)[-1] for v in versions} == {"v1", "v2"}
