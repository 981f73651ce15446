"""The labelled data of a retraining run (training dataset + recent feedback), its holdout, and the comparison."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.utils import timezone

from apps.core import storage
from apps.deployments.models import Deployment, PredictionLog
from apps.monitoring.metrics import METRICS
from apps.monitoring.models import GroundTruth

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "r2")
_JOIN_BATCH = 500


# --- Reading -----------------------------------------------------------------------------------------------------


def training_frame(dataset_version, features: list[str], target: str, *, max_rows: int):
    """The features and target of the training dataset's typed copy (rows without a label dropped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches, rows = [], 0
    with storage.open_stream(dataset_version.parquet_name) as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=65_536, columns=[*features, target]):
            batches.append(batch)
            rows += batch.num_rows
            if rows >= max_rows:
                break
        schema = parquet.schema_arrow
    table = pa.Table.from_batches(batches, schema=pa.schema([schema.field(c) for c in [*features, target]])) \
        if batches else None
    if table is None:
        import pandas as pd

        return pd.DataFrame(columns=[*features, target])
    frame = table.to_pandas().head(max_rows)
    return frame[frame[target].notna()].reset_index(drop=True)


def labelled_feedback(deployment: Deployment, *, days: int, now: dt.datetime | None = None):
    """GroundTruth rows of predictions made in the last `days` days (oldest first)."""
    since = (now or timezone.now()) - dt.timedelta(days=days)
    return GroundTruth.objects.filter(deployment=deployment, predicted_at__gte=since).order_by("predicted_at", "id")


def prediction_inputs(deployment: Deployment, request_ids: list[str]) -> dict[str, dict]:
    """{request_id: {"columns", "data"}} of served (not shadow) logged requests that carry their rows."""
    found: dict[str, list] = {}
    for start in range(0, len(request_ids), _JOIN_BATCH):
        chunk = request_ids[start:start + _JOIN_BATCH]
        logs = PredictionLog.objects.filter(deployment=deployment, request_id__in=chunk, status_code__lt=400) \
            .exclude(role=PredictionLog.Role.SHADOW).order_by("id").values_list("request_id", "inputs")
        for request_id, inputs in logs:
            if isinstance(inputs, dict) and "columns" in inputs and "data" in inputs:
                found.setdefault(request_id, []).append(inputs)
    # A batch run logs several chunks under one request id without their offsets: not joinable by row here.
    return {request_id: chunks[0] for request_id, chunks in found.items() if len(chunks) == 1}


def feedback_frame(deployment: Deployment, features: list[str], target: str, *, like, days: int):
    """(frame, skipped): the logged inputs of labelled predictions of the last `days` days with their labels, oldest
    first, typed like the training frame; `skipped` counts labels whose row could not be found or typed."""
    import pandas as pd

    truths = list(labelled_feedback(deployment, days=days).values_list("request_id", "row", "label"))
    inputs = prediction_inputs(deployment, sorted({t[0] for t in truths}))
    rows, labels, skipped = [], [], 0
    for request_id, row, label in truths:
        body = inputs.get(request_id)
        if body is None or row >= len(body["data"]):
            skipped += 1
            continue
        record = dict(zip(body["columns"], body["data"][row], strict=False))
        if any(name not in record for name in features) or label is None:
            skipped += 1
            continue
        rows.append([record[name] for name in features])
        labels.append(label)
    frame = pd.DataFrame(rows, columns=features)
    frame[target] = labels
    frame = _typed_like(frame, like)
    kept = frame[frame[target].notna()].reset_index(drop=True)
    return kept, skipped + len(frame) - len(kept)


def _typed_like(frame, like):
    """Each column converted to the training frame's dtype; a value that does not convert becomes missing."""
    import pandas as pd

    for column in frame.columns:
        dtype = like[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            try:
                frame[column] = frame[column].astype(dtype)
            except (TypeError, ValueError):
                frame[column] = frame[column].map(lambda v: None if v is None else str(v))
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        whole = numbers.notna().all() and (numbers % 1 == 0).all()
        frame[column] = numbers.astype(dtype) if pd.api.types.is_integer_dtype(dtype) and whole else numbers
    return frame


# --- The holdout -------------------------------------------------------------------------------------------------


@dataclass
class Split:
    train: object  # DataFrame
    holdout: object  # DataFrame: training rows held out, then recent feedback rows
    recent: object  # DataFrame: the feedback rows of the holdout
    train_feedback: int  # feedback rows in `train`


def is_classification(estimator, task_type: str) -> bool:
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return True
    if is_regressor(estimator):
        return False
    return task_type != "regression"


def _take(frame, n: int, target: str, *, classifier: bool, random_state: int):
    """(rest, held): `n` rows held out at random, stratified by the label where every class allows it."""
    from sklearn.model_selection import train_test_split

    if n <= 0 or len(frame) == 0:
        return frame, frame.iloc[0:0]
    n = min(n, len(frame) - 1)
    if n <= 0:
        return frame, frame.iloc[0:0]
    counts = frame[target].value_counts()
    stratify = frame[target] if classifier and counts.min() >= 2 and len(counts) <= min(n, len(frame) - n) else None
    rest, held = train_test_split(frame, test_size=n, random_state=random_state, stratify=stratify)
    return rest, held


def split(training, feedback, target: str, *, classifier: bool, share: float, random_state: int,
          recent_min: int) -> Split:
    """A `share` holdout. With at least `recent_min` feedback rows, the most recent ones (up to half of them) fill
    most of it: they describe the world now. Fewer feedback rows are held out in proportion, like the rest."""
    import pandas as pd

    feedback = feedback if feedback is not None else training.iloc[0:0]
    size = max(1, round(share * (len(training) + len(feedback))))
    if len(feedback) >= recent_min:
        recent_n = min(len(feedback) // 2, size)
        feedback_train, recent = feedback.iloc[:len(feedback) - recent_n], feedback.iloc[len(feedback) - recent_n:]
    else:
        recent_n = round(share * len(feedback))
        feedback_train, recent = _take(feedback, recent_n, target, classifier=classifier, random_state=random_state)
    training_train, training_held = _take(training, size - len(recent), target, classifier=classifier,
                                          random_state=random_state)
    train = pd.concat([training_train, feedback_train], ignore_index=True)
    holdout = pd.concat([training_held, recent], ignore_index=True)
    return Split(train=train, holdout=holdout, recent=recent.reset_index(drop=True),
                 train_feedback=len(feedback_train))


# --- Comparing ---------------------------------------------------------------------------------------------------


def _clean(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def evaluate(model, frame, features: list[str], target: str, *, classifier: bool) -> dict[str, float | None]:
    """Holdout metrics: accuracy, precision, recall, F1, ROC AUC (with predict_proba) or MAE, RMSE, R²."""
    import numpy as np
    from sklearn import metrics as m

    if len(frame) == 0:
        return dict.fromkeys(CLASSIFICATION_METRICS if classifier else REGRESSION_METRICS)
    x, y = frame[features], frame[target].to_numpy()
    predicted = model.predict(x)
    if not classifier:
        return {"mae": _clean(m.mean_absolute_error(y, predicted)),
                "rmse": _clean(math.sqrt(m.mean_squared_error(y, predicted))),
                "r2": _clean(m.r2_score(y, predicted)) if len(frame) > 1 else None}
    classes = list(getattr(model, "classes_", sorted(set(y.tolist()) | set(np.asarray(predicted).tolist()))))
    binary = len(classes) == 2
    options = {"pos_label": classes[-1], "average": "binary"} if binary else {"average": "weighted"}
    result = {"accuracy": _clean(m.accuracy_score(y, predicted)),
              "precision": _clean(m.precision_score(y, predicted, zero_division=0, **options)),
              "recall": _clean(m.recall_score(y, predicted, zero_division=0, **options)),
              "f1": _clean(m.f1_score(y, predicted, zero_division=0, **options)), "roc_auc": None}
    if hasattr(model, "predict_proba"):
        try:
            probabilities = model.predict_proba(x)
            if binary:
                result["roc_auc"] = _clean(m.roc_auc_score(y == classes[-1], probabilities[:, 1]))
            else:
                result["roc_auc"] = _clean(m.roc_auc_score(y, probabilities, multi_class="ovr", labels=classes))
        except (ValueError, AttributeError, IndexError):  # one class in the holdout, or no probabilities after all
            result["roc_auc"] = None
    return result


def compare(champion, challenger, split: Split, features: list[str], target: str, *, classifier: bool,
            base_number: int, recent_min: int = 50) -> dict:
    """Champion and challenger on the same holdout (and on its recent rows), with a plain-language summary."""
    overall = {"champion": evaluate(champion, split.holdout, features, target, classifier=classifier),
               "challenger": evaluate(challenger, split.holdout, features, target, classifier=classifier)}
    recent = None
    if len(split.recent) >= recent_min:
        recent = {"rows": len(split.recent),
                  "champion": evaluate(champion, split.recent, features, target, classifier=classifier),
                  "challenger": evaluate(challenger, split.recent, features, target, classifier=classifier)}
    primary = "accuracy" if classifier else "mae"
    basis = recent or overall
    before, after = basis["champion"][primary], basis["challenger"][primary]
    delta = None if before is None or after is None else round(after - before, 6)
    higher = METRICS[primary].higher_is_better
    rows = recent["rows"] if recent else len(split.holdout)
    where = f"the {rows:,} most recent labelled rows" if recent else f"{rows:,} held-out rows"
    notes = []
    if recent:
        notes.append(f"The comparison rests on the {rows:,} most recent labelled predictions, held out from training: "
                     "they describe the world now, so they weigh more than the older training data.")
    if len(split.holdout) > len(split.recent):
        notes.append(f"v{base_number} was trained on the training dataset, so it has seen its "
                     f"{len(split.holdout) - len(split.recent):,} held-out rows before: on those it looks better than "
                     "it is.")
    return {"kind": "classification" if classifier else "regression",
            "holdout_rows": len(split.holdout), "holdout_recent_rows": len(split.recent),
            **overall, "recent": recent, "primary_metric": primary, "higher_is_better": higher, "delta": delta,
            "better": None if delta is None or delta == 0 else (delta > 0) == higher,
            "summary": summary(primary, before, after, where, base_number), "notes": notes}


def summary(metric: str, before: float | None, after: float | None, where: str, base_number: int) -> str:
    """One sentence, e.g. "The retrained model is 3.1 points more accurate than v2 on the 1,240 most recent labelled
    rows (84.3% vs 81.2%)."""
    if before is None or after is None:
        return f"The retrained model and v{base_number} could not both be scored on {where}."
    if metric == "accuracy":
        points = (after - before) * 100
        figures = f"({after:.1%} vs {before:.1%})"
        if abs(points) < 0.05:
            return f"The retrained model is as accurate as v{base_number} on {where} {figures}."
        word = "more" if points > 0 else "less"
        advice = "" if points > 0 else f": keep v{base_number} unless other evidence says otherwise"
        return f"The retrained model is {abs(points):.1f} points {word} accurate than v{base_number} on {where} " \
               f"{figures}{advice}."
    change = before - after  # MAE: lower is better
    figures = f"(MAE {after:,.3g} vs {before:,.3g})"
    if abs(change) < 1e-9:
        return f"The retrained model's predictions are as far off as v{base_number}'s on {where} {figures}."
    word = "less" if change > 0 else "more"
    return f"The retrained model's predictions are off by {abs(change):,.3g} {word} on average than " \
           f"v{base_number}'s on {where} {figures}."


def comparison_rows(comparison: dict) -> list[dict]:
    """The comparison as table rows: label, champion, challenger, change in words, whether it is better."""
    rows = []
    basis = comparison.get("recent") or comparison
    for key in CLASSIFICATION_METRICS if comparison.get("kind") == "classification" else REGRESSION_METRICS:
        info = METRICS[key]
        before, after = basis.get("champion", {}).get(key), basis.get("challenger", {}).get(key)
        if before is None and after is None:
            continue
        percent = info.unit == "%"
        change, better = "", None
        if before is not None and after is not None:
            delta = after - before
            change = f"{delta * 100:+.1f} points" if percent else f"{delta:+,.4g}"
            better = None if abs(delta) < 1e-12 else (delta > 0) == info.higher_is_better
        rows.append({"key": key, "label": info.label, "description": info.description,
                     "champion": _shown(before, percent), "challenger": _shown(after, percent), "change": change,
                     "better": better})
    return rows


def _shown(value: float | None, percent: bool) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if percent else f"{value:,.4g}"
