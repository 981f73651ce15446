"""How a served model computes its predictions: the shortest path its flavour allows to the same answers.

Plain Python, NumPy, MLflow and scikit-learn only (no Django): the exported container ships this file beside
`protocol.py`, so the packaged server predicts exactly as the portal does. `choose` picks the path:

- scikit-learn models are called directly (the signature was already checked by protocol.Schema, so MLflow's
  second, slower enforcement is skipped), and single-output forests go through `forest_predictor`;
- single-input ONNX models run their session on the matrix, in a session that does not spin;
- anything else goes through the MLflow pyfunc.

scikit-learn forests are the case that matters. `RandomForestClassifier.predict` on one row validates its input
once per tree and dispatches the trees through joblib: about 11 ms for 100 trees on the benchmark machine, of
which the trees' own work (`tree_.predict`, compiled) is a few per cent. `forest_predictor` computes the same
function the way scikit-learn does it with one job: the input converted once to float32, each tree's
probabilities (or values) summed in the estimators' order, divided by their number, the arg-max class taken.
It is the same artifact and the same arithmetic in the same order, and it is only used after `verified` found
its answers identical to the estimator's own `predict` on a sample; anything else keeps the library's path.

A request of a few rows walks the trees in plain Python instead (`_TreeWalk`). Each `tree_.predict` call
releases the GIL, so 100 trees are 100 hand-backs, and inside a web server whose other threads are busy each one
waits for a turn (up to the interpreter's 5 ms switch interval): a 1.7 ms prediction took 25-60 ms at the 90th-
99th percentile beside one busy thread, and over a second under the load test. The walk holds the GIL from start
to end, compares the same float32 inputs (widened to float64, as the compiled code does) with the same
thresholds, and adds the same leaf values in the same order.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

INTEGER_TYPES = ("long", "integer")

_FORESTS = {"RandomForestClassifier", "ExtraTreesClassifier", "RandomForestRegressor", "ExtraTreesRegressor"}


def _final_estimator(model):
    """(steps before the last as one transform, or None; the last estimator) for a Pipeline, else (None, model)."""
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps:
        head = model[:-1] if len(steps) > 1 else None
        return head, steps[-1][1]
    return None, model


def _single_output_forest(estimator) -> bool:
    if type(estimator).__name__ not in _FORESTS or getattr(estimator, "n_outputs_", None) != 1:
        return False
    trees = getattr(estimator, "estimators_", None)
    return bool(trees) and all(hasattr(getattr(t, "tree_", None), "predict") for t in trees)


def forest_predictor(model):
    """A `predict(frame)` for a fitted single-output scikit-learn forest (or a Pipeline ending in one), else None."""
    import numpy as np

    head, forest = _final_estimator(model)
    if not _single_output_forest(forest):
        return None
    trees = [t.tree_ for t in forest.estimators_]
    count = len(trees)
    classifier = hasattr(forest, "classes_")
    n_classes = int(forest.n_classes_) if classifier else 0
    classes = forest.classes_ if classifier else None
    walk = _TreeWalk.build(trees, n_classes)

    def predict(frame, small_rows: int = WALK_MAX_ROWS):
        features = head.transform(frame) if head is not None else frame
        matrix = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
        if matrix.ndim != 2 or not np.isfinite(matrix).all():
            return model.predict(frame)  # gaps or odd shapes: the library decides what they mean
        if walk is not None and matrix.shape[0] <= small_rows and matrix.shape[1] >= walk.n_features:
            total = np.array(walk.totals(matrix.tolist()), dtype=np.float64).reshape(matrix.shape[0], -1)
            total /= count
            if classifier:
                return classes.take(np.argmax(total, axis=1), axis=0)
            return total[:, 0]
        if classifier:
            total = np.zeros((matrix.shape[0], n_classes), dtype=np.float64)
            for tree in trees:
                proba = tree.predict(matrix)[:, :n_classes]
                normalizer = proba.sum(axis=1)[:, np.newaxis]
                normalizer[normalizer == 0.0] = 1.0
                total += proba / normalizer
            total /= count
            return classes.take(np.argmax(total, axis=1), axis=0)
        total = np.zeros(matrix.shape[0], dtype=np.float64)
        for tree in trees:
            total += tree.predict(matrix)[:, 0]
        total /= count
        return total

    predict.walks = walk is not None
    # Small requests to a bare forest are walked by our own code in time bounded by rows × trees × depth (rows with
    # gaps go to the same forest's own predict): nothing there can hang, so the caller may skip the thread that cuts
    # hung models off. A pipeline's steps may be any code, so they keep it.
    predict.inline_rows = WALK_MAX_ROWS if walk is not None and head is None else 0
    return predict


def inline_rows(predict) -> int:
    """Up to how many rows `predict` may run on the request's own thread, without the timeout pool (0: never)."""
    return getattr(predict, "inline_rows", 0)


# Up to where the walk costs no more than the compiled path on an idle core (100 trees, 30 features: 2.2 ms walked
# against 3.2 compiled at 25 rows, 3.5 against 2.8 at 40). Beside a busy thread the compiled path's p99 is 115-165 ms
# for 16-40 rows (one GIL hand-back per tree), the walk's 2-10 ms.
WALK_MAX_ROWS = 32
WALK_MAX_NODES = 2_000_000  # the walk's lists cost ~100 bytes a node; a bigger forest keeps the compiled path


class _TreeWalk:
    """A fitted forest's trees as flat Python lists, walked one row at a time without releasing the GIL.

    Leaves point to themselves (feature 0, threshold +inf), so the loop needs no test for them; each leaf keeps
    what the compiled path adds for it: a classifier's class fractions (value / its sum, a zero sum read as 1,
    computed by NumPy exactly as predict's own normaliser), a regressor's value."""

    def __init__(self, roots, feature, threshold, left, right, leaf_values, n_features):
        self.roots, self.feature, self.threshold = roots, feature, threshold
        self.left, self.right, self.leaf_values, self.n_features = left, right, leaf_values, n_features

    @classmethod
    def build(cls, trees, n_classes: int):
        import numpy as np

        if sum(int(tree.node_count) for tree in trees) > WALK_MAX_NODES:
            return None
        roots, feature, threshold, left, right, leaf_values = [], [], [], [], [], []
        n_features = 1  # a leaf reads column 0 (and compares it with +inf)
        for tree in trees:
            offset = len(feature)
            roots.append(offset)
            children_left, children_right = tree.children_left, tree.children_right
            is_leaf = children_left == -1
            own = np.arange(offset, offset + tree.node_count)
            left.extend(np.where(is_leaf, own, children_left + offset).tolist())
            right.extend(np.where(is_leaf, own, children_right + offset).tolist())
            feature.extend(np.where(is_leaf, 0, tree.feature).tolist())
            threshold.extend(np.where(is_leaf, np.inf, tree.threshold.astype(np.float64)).tolist())
            n_features = max(n_features, int(tree.feature.max()) + 1)
            if n_classes:
                value = tree.value[:, 0, :n_classes]
                normalizer = value.sum(axis=1)[:, np.newaxis]
                normalizer[normalizer == 0.0] = 1.0
                leaf_values.extend((value / normalizer).tolist())
            else:
                leaf_values.extend([v] for v in tree.value[:, 0, 0].tolist())
        return cls(roots, feature, threshold, left, right, leaf_values, n_features)

    def totals(self, rows: list[list[float]]) -> list[float]:
        """Per row, the leaf values of every tree summed in the trees' order (flattened, row after row)."""
        feature, threshold, left, right, leaf_values = (self.feature, self.threshold, self.left, self.right,
                                                        self.leaf_values)
        out: list[float] = []
        for row in rows:
            total = [0.0] * len(leaf_values[0])
            for node in self.roots:
                while True:
                    following = left[node] if row[feature[node]] <= threshold[node] else right[node]
                    if following == node:
                        break
                    node = following
                for k, value in enumerate(leaf_values[node]):
                    total[k] += value
            out.extend(total)
        return out


def verified(fast, reference, sample) -> bool:
    """Whether `fast(sample)` answers exactly what `reference(sample)` does (same values, same dtype kind)."""
    import numpy as np

    try:
        got, want = np.asarray(fast(sample)), np.asarray(reference(sample))
    except Exception as exc:  # a shortcut that cannot even run is not used
        logger.info("fast path refused: %s", exc)
        return False
    return got.shape == want.shape and got.dtype.kind == want.dtype.kind and bool(np.array_equal(got, want))


def sample_rows(frame_of, inputs: list[dict], rows: int = 256, seed: int = 0):
    """Rows to compare two prediction paths on: the typical values (`inputs` carry an optional "typical") jittered,
    so the trees are walked down different branches. `frame_of(rows)` builds the model's DataFrame."""
    import numpy as np

    rng = np.random.default_rng(seed)
    columns = []
    for column in inputs:
        kind, centre = column.get("type"), column.get("typical")
        scale = abs(float(centre)) if isinstance(centre, int | float) and centre else 1.0
        base = float(centre) if isinstance(centre, int | float) else 0.0
        values = base + rng.normal(0.0, scale, rows)
        if kind in INTEGER_TYPES:
            values = np.round(values).astype(np.int64)
        columns.append(values.tolist())  # Python numbers, as a JSON request would carry them
    return frame_of([list(row) for row in zip(*columns, strict=True)])


# --- Choosing the path -----------------------------------------------------------------------------------------


def choose(pyfunc, schema, typical: dict | None = None, label: str = "model"):
    """(predict(frame), the path's name) for a loaded MLflow pyfunc. `schema` is its protocol.Schema; `typical`
    the training data's typical value per input, around which the forest check draws its sample."""
    loader = (pyfunc.metadata.flavors.get("python_function") or {}).get("loader_module", "")
    impl = getattr(pyfunc, "_model_impl", None)
    if loader == "mlflow.sklearn" and (native := _raw_model(pyfunc)) is not None:
        fast = forest_predictor(native) if schema.numeric else None
        if fast is not None:
            inputs = [{**column, "typical": (typical or {}).get(column["name"])} for column in schema.inputs]
            sample = sample_rows(schema.rows_frame, inputs)
            # Both ways the fast path computes: the compiled trees (large requests) and the walk (small ones).
            if verified(fast, native.predict, sample) and verified(
                    lambda frame: fast(frame, small_rows=len(frame)), native.predict, sample):
                return fast, "forest fast path"
            logger.warning("%s: the forest fast path disagreed with the estimator; serving through scikit-learn",
                           label)
        return native.predict, "scikit-learn"
    if hasattr(impl, "rt") and len(getattr(impl, "inputs", ())) == 1:
        return _onnx(_quiet_session(impl.rt)), "onnx"
    return pyfunc.predict, "pyfunc"


def _raw_model(pyfunc):
    try:
        return pyfunc.get_raw_model()
    except Exception as exc:  # not every flavour exposes its raw model; the pyfunc path still works
        logger.debug("no raw model (%s): predicting through the pyfunc", exc)
        return None


def _onnx(session):
    import numpy as np

    entry = session.get_inputs()[0]
    dtype = {"tensor(double)": np.float64, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32}.get(entry.type, np.float32)
    name = entry.name

    def predict(frame):
        return session.run(None, {name: frame.to_numpy(dtype=dtype)})[0]

    return predict


def _quiet_session(session):
    """The same ONNX model in a session that computes on the caller's thread and does not spin.

    onnxruntime's default pool keeps threads busy-waiting after each run; beside a web server's threads on a
    small machine, that spinning costs the other requests more than the pool saves a one-row prediction.
    Reopened from the model's file; if that is not possible, the session stays as it was."""
    path = getattr(session, "_model_path", None)
    if not path:
        return session
    try:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(path, sess_options=options, providers=session.get_providers())
    except Exception as exc:  # a model onnxruntime opened once should open again; if not, keep the first
        logger.warning("could not reopen the ONNX session without spinning: %s", exc)
        return session
