"""Model performance from labelled predictions, kept as additive sufficient statistics.

A rollup stores, per bucket, counts from which every metric can be recomputed after summing any number of
buckets: a confusion table (and, when the model returns scores, score histograms per true class) for
classifiers; sums of errors and of the label for regressors. Pure: numbers in, numbers out.
"""

from __future__ import annotations

import math

import numpy as np

SCORE_BINS = 100  # ROC AUC from histograms of scores in [0, 1]: within 1/SCORE_BINS of the exact value


def normalise_label(value) -> str | None:
    """Labels and predictions compared as text: 1, 1.0, "1" and True are the same class."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    if isinstance(value, list | tuple):
        return None
    text = str(value).strip()
    if text.lower() in ("true", "false"):
        return "1" if text.lower() == "true" else "0"
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _score(prediction) -> float | None:
    """A probability of the positive class, when the model answered with one (a vector's last entry, or a
    number strictly between 0 and 1); None when it answered with a label."""
    if isinstance(prediction, list | tuple):
        number = _number(prediction[-1]) if prediction else None
    else:
        number = _number(prediction)
        if number is not None and not 0.0 < number < 1.0:
            return None
    return number if number is not None and 0.0 <= number <= 1.0 else None


def statistics(kind: str, labels: list, predictions: list) -> dict:
    """Sufficient statistics of (label, prediction) pairs; pairs with a missing side are skipped."""
    if kind == "regression":
        y, p = [], []
        for label, prediction in zip(labels, predictions, strict=True):
            a, b = _number(label), _number(prediction)
            if a is not None and b is not None:
                y.append(a)
                p.append(b)
        y_arr, p_arr = np.asarray(y), np.asarray(p)
        err = p_arr - y_arr
        return {"kind": "regression", "n": len(y), "sae": float(np.abs(err).sum()), "sse": float((err ** 2).sum()),
                "sy": float(y_arr.sum()), "syy": float((y_arr ** 2).sum())}
    confusion: dict[str, int] = {}
    scores: dict[str, list[int]] = {}
    n = 0
    for label, prediction in zip(labels, predictions, strict=True):
        truth = normalise_label(label)
        if truth is None or prediction is None:
            continue
        score = _score(prediction)
        guess = ("1" if score >= 0.5 else "0") if score is not None else normalise_label(prediction)
        if guess is None:
            continue
        n += 1
        key = f"{truth}\t{guess}"
        confusion[key] = confusion.get(key, 0) + 1
        if score is not None:
            hist = scores.setdefault(truth, [0] * SCORE_BINS)
            hist[min(int(score * SCORE_BINS), SCORE_BINS - 1)] += 1
    return {"kind": "classification", "n": n, "confusion": confusion, "scores": scores}


def merge(a: dict, b: dict) -> dict:
    if not a:
        return dict(b)
    if not b:
        return dict(a)
    if a.get("kind") != b.get("kind"):
        return a if a.get("n", 0) >= b.get("n", 0) else b
    if a["kind"] == "regression":
        return {"kind": "regression", **{k: a[k] + b[k] for k in ("n", "sae", "sse", "sy", "syy")}}
    confusion = dict(a["confusion"])
    for key, count in b["confusion"].items():
        confusion[key] = confusion.get(key, 0) + count
    scores = {k: list(v) for k, v in a.get("scores", {}).items()}
    for label, hist in b.get("scores", {}).items():
        scores[label] = [x + y for x, y in zip(scores.get(label, [0] * SCORE_BINS), hist, strict=True)]
    return {"kind": "classification", "n": a["n"] + b["n"], "confusion": confusion, "scores": scores}


def positive_label(labels: set[str]) -> str | None:
    """The class precision and recall are about, for two classes: "1" (or "yes"/"true"), else the last one."""
    if len(labels) > 2 or not labels:
        return None
    for candidate in ("1", "yes", "Yes", "positive"):
        if candidate in labels:
            return candidate
    return sorted(labels)[-1]


def metrics(stats: dict) -> dict[str, float | None]:
    """accuracy, precision, recall, f1, roc_auc (classifiers; macro averages beyond two classes) or mae, rmse, r2."""
    n = stats.get("n", 0)
    if not n:
        return {}
    if stats["kind"] == "regression":
        mean = stats["sy"] / n
        total = stats["syy"] - n * mean * mean
        return {"mae": stats["sae"] / n, "rmse": math.sqrt(stats["sse"] / n),
                "r2": (1 - stats["sse"] / total) if total > 1e-12 else None}
    pairs = [(*key.split("\t", 1), count) for key, count in stats["confusion"].items()]
    correct = sum(count for truth, guess, count in pairs if truth == guess)
    classes = {truth for truth, _, _ in pairs} | {guess for _, guess, _ in pairs}
    result: dict[str, float | None] = {"accuracy": correct / n}
    positive = positive_label(classes)
    targets = [positive] if positive is not None else sorted(classes)
    precisions, recalls, f1s = [], [], []
    for cls in targets:
        tp = sum(c for t, g, c in pairs if t == cls and g == cls)
        predicted = sum(c for _, g, c in pairs if g == cls)
        actual = sum(c for t, _, c in pairs if t == cls)
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    result.update(precision=float(np.mean(precisions)), recall=float(np.mean(recalls)), f1=float(np.mean(f1s)))
    result["roc_auc"] = _auc(stats.get("scores") or {}, positive)
    return result


def _auc(scores: dict[str, list[int]], positive: str | None) -> float | None:
    """ROC AUC from score histograms: the chance a random positive outscores a random negative (ties count half)."""
    if positive is None or positive not in scores or len(scores) != 2:
        return None
    pos = np.asarray(scores[positive], dtype=np.float64)
    neg = np.asarray(next(v for k, v in scores.items() if k != positive), dtype=np.float64)
    if not pos.sum() or not neg.sum():
        return None
    below = np.cumsum(neg) - neg  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
