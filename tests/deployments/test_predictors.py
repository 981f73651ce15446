"""The forest fast path gives exactly scikit-learn's predictions, or is not used."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesRegressor, RandomForestClassifier, RandomForestRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from apps.deployments import predictors, services
from tests.deployments.conftest import FEATURES, import_skops, training_frame


def data(rows=300, seed=1):
    frame = training_frame(rows=rows, seed=seed)
    return frame[FEATURES], frame["churned"]


def unseen(rows=2000, seed=9):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(0, 120, rows), "income": rng.normal(40_000, 30_000, rows),
                         "tenure": rng.integers(-5, 60, rows)})


@pytest.mark.parametrize("model", [
    RandomForestClassifier(n_estimators=30, random_state=0),
    RandomForestClassifier(n_estimators=30, max_depth=3, random_state=1),
    make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=20, random_state=2)),
    RandomForestRegressor(n_estimators=25, random_state=0),
    ExtraTreesRegressor(n_estimators=25, random_state=0),
], ids=["forest", "shallow forest", "pipeline", "regressor", "extra trees"])
def test_the_fast_path_answers_exactly_what_scikit_learn_does(model):
    features, labels = data()
    if "Regressor" in type(model).__name__:
        labels = features["income"] / 1000 + labels
    model.fit(features, labels)
    fast = predictors.forest_predictor(model)
    assert fast is not None
    assert fast.walks
    # Only a bare forest's walk skips the timeout pool: a pipeline's steps are not ours to bound.
    assert predictors.inline_rows(fast) == (0 if hasattr(model, "steps") else predictors.WALK_MAX_ROWS)
    for frame in (features.head(1), unseen()):
        got, want = fast(frame), model.predict(frame)
        assert got.dtype == want.dtype and np.array_equal(got, want)
        # The same rows walked in plain Python (how requests of a few rows are answered) and through the
        # compiled trees (how larger ones are).
        walked, compiled = fast(frame, small_rows=len(frame)), fast(frame, small_rows=0)
        assert walked.dtype == want.dtype and np.array_equal(walked, want)
        assert np.array_equal(compiled, want)


def test_a_forest_too_big_to_walk_keeps_the_compiled_trees(monkeypatch):
    features, labels = data()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
    monkeypatch.setattr(predictors, "WALK_MAX_NODES", 10)
    fast = predictors.forest_predictor(model)
    assert not fast.walks
    assert predictors.inline_rows(fast) == 0
    assert np.array_equal(fast(unseen(3)), model.predict(unseen(3)))


def test_text_labels_come_back_as_the_same_labels():
    features, labels = data()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels.map({0: "stays", 1: "churns"}))
    assert list(predictors.forest_predictor(model)(unseen(50))) == list(model.predict(unseen(50)))


def test_other_models_keep_their_own_path():
    features, labels = data()
    assert predictors.forest_predictor(DecisionTreeClassifier().fit(features, labels)) is None
    two_outputs = RandomForestRegressor(n_estimators=5).fit(features, np.c_[labels, labels])
    assert predictors.forest_predictor(two_outputs) is None


def test_a_shortcut_that_disagrees_is_refused():
    features, labels = data()
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
    assert predictors.verified(predictors.forest_predictor(model), model.predict, unseen())
    assert not predictors.verified(lambda frame: 1 - model.predict(frame), model.predict, unseen())
    assert not predictors.verified(lambda frame: 1 / 0, model.predict, unseen())


def test_a_deployed_forest_serves_through_the_fast_path(people, project, sandbox, training, api_as,
                                                        django_capture_on_commit_callbacks):
    features, labels = data()
    forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(features, labels)
    version = import_skops(project, people["scientist"], django_capture_on_commit_callbacks, model=forest,
                           training=training)
    deployment = services.deploy(project, actor=people["scientist"], name="Forest", environment=sandbox,
                                 version=version)
    from apps.deployments import serving

    assert serving.route_for(deployment.slug).champion.path == "forest fast path"
    frame = unseen(500)
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
    response = api_as(people["viewer"]).post(f"/api/v1/deployments/{deployment.slug}/invocations", data=body,
                                             content_type="application/json")
    assert response.json()["predictions"] == forest.predict(frame).tolist()


def test_small_requests_to_a_walked_forest_skip_the_timeout_pool_and_everything_else_keeps_it():
    import threading

    from apps.deployments import serving

    class Recorder:  # stands in for a loaded model: which thread predicted
        def __init__(self, inline_rows):
            self.inline_rows, self.threads = inline_rows, []

        def predict(self, frame):
            self.threads.append(threading.current_thread().name)
            return np.zeros(len(frame))

    walked, other = Recorder(predictors.WALK_MAX_ROWS), Recorder(0)
    small, large = unseen(predictors.WALK_MAX_ROWS), unseen(predictors.WALK_MAX_ROWS + 1)
    for model, frame in ((walked, small), (walked, large), (other, unseen(1))):
        serving.run_model(model, frame, timeout=5)
    here = threading.current_thread().name
    assert walked.threads[0] == here
    assert walked.threads[1].startswith("predict") and other.threads[0].startswith("predict")
