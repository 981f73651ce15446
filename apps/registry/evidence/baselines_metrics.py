"""Scores and words of the baseline comparison: pure functions, data in, numbers and sentences out."""

from __future__ import annotations

import math

NOISE_SE = 2.0  # a difference within two standard errors of the paired per-row differences is "about the same"
ANALYST = "that an analyst can explain line by line"
LEAKAGE_NOTE = ("The baselines never saw the test rows. The imported model may have been trained on some of them, "
                "in which case its lead here is overstated.")


def label(value) -> str:
    """Class labels compared as text, with 1.0 and 1 the same label (a target column read with gaps is float)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    item = getattr(value, "item", None)
    return label(item()) if callable(item) and not isinstance(value, str | bytes) else str(value)


def _finite(value: float | None) -> float | None:
    return round(float(value), 6) if value is not None and math.isfinite(float(value)) else None


def classification_metrics(y_true, predictions, probabilities, classes) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    truth, predicted = [label(v) for v in y_true], [label(v) for v in predictions]
    return {"accuracy": _finite(accuracy_score(truth, predicted)),
            "f1_macro": _finite(f1_score(truth, predicted, average="macro", zero_division=0)),
            "roc_auc": _finite(_auc(truth, probabilities, classes))}


def _auc(truth: list[str], probabilities, classes) -> float | None:
    """ROC AUC from class probabilities: the second class's for two classes, one-vs-rest for more; else None."""
    from sklearn.metrics import roc_auc_score

    if probabilities is None or not classes:
        return None
    labels = [label(c) for c in classes]
    if len(set(truth)) < 2 or not set(truth) <= set(labels):
        return None
    try:
        if len(labels) == 2:
            return float(roc_auc_score([t == labels[1] for t in truth], [row[1] for row in probabilities]))
        return float(roc_auc_score(truth, probabilities, multi_class="ovr", labels=labels))
    except ValueError:  # e.g. a class of the model absent from the test rows
        return None


def regression_metrics(y_true, predictions, probabilities=None, classes=None) -> dict:
    import numpy as np
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    truth, predicted = np.asarray(y_true, dtype=float), np.asarray(predictions, dtype=float)
    return {"mae": _finite(mean_absolute_error(truth, predicted)),
            "rmse": _finite(math.sqrt(mean_squared_error(truth, predicted))),
            "r2": _finite(r2_score(truth, predicted))}


def lift(y_true, ours, theirs, classification: bool) -> dict:
    """The model's lead over a baseline on the headline metric, and whether it is larger than chance.

    Both are scored on the same rows, so the per-row differences are paired: their standard error says how
    much the difference would move on another sample of this size.
    """
    import numpy as np

    if classification:
        truth = [label(v) for v in y_true]
        a = np.array([label(p) == t for p, t in zip(ours, truth, strict=True)], dtype=float)
        b = np.array([label(p) == t for p, t in zip(theirs, truth, strict=True)], dtype=float)
        per_row = a - b  # accuracy gained per row
    else:
        truth = np.asarray(y_true, dtype=float)
        per_row = np.abs(truth - np.asarray(theirs, dtype=float)) - np.abs(truth - np.asarray(ours, dtype=float))
    difference = float(per_row.mean())
    se = float(per_row.std(ddof=1) / math.sqrt(len(per_row))) if len(per_row) > 1 else 0.0
    verdict = "better" if difference > 0 else "worse"
    if abs(difference) <= NOISE_SE * se or difference == 0:
        verdict = "same"
    return {"difference": round(difference, 6), "standard_error": round(se, 6), "verdict": verdict}


def number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def words(result: dict, models: list[dict]) -> tuple[str, list[str]]:
    """The plain-words sentence about the model against the linear baseline, and notes for the reader."""
    ours, linear, simplest = models[0]["metrics"], models[2]["metrics"], models[1]["metrics"]
    lift, n = result["lift"], result["test_rows"]
    notes = []
    if result["task"] == "classification":
        name = f"a logistic regression {ANALYST}"
        points = abs(lift["difference"]) * 100
        scores = f"{ours['accuracy']:.1%} against {linear['accuracy']:.1%} on {n} test rows"
        sentence = {
            "better": f"This model is {points:.1f} points of accuracy better than {name} ({scores}).",
            "worse": f"This model is {points:.1f} points of accuracy worse than {name} ({scores}). "
                     "The simpler model may be enough, and it is easier to explain.",
            "same": f"This model is about as accurate as {name} ({scores}; a difference this small is within "
                    "what chance gives on this many rows). The simpler model may be enough.",
        }[lift["verdict"]]
        if result["lift_simplest"]["verdict"] != "better":
            notes.append(f"It is not clearly better than always predicting the most common class "
                         f"({simplest['accuracy']:.1%} accurate): check that it learned anything at all.")
    else:
        name = f"a linear regression {ANALYST}"
        ours_mae, theirs_mae = ours["mae"], linear["mae"]
        change = abs(ours_mae - theirs_mae) / theirs_mae * 100 if theirs_mae else 0.0
        scores = f"off by {number(ours_mae)} on average, against {number(theirs_mae)}, on {n} test rows"
        sentence = {
            "better": f"This model's predictions are {change:.0f}% closer to the truth than those of {name} "
                      f"({scores}).",
            "worse": f"This model's predictions are {change:.0f}% further from the truth than those of {name} "
                     f"({scores}). The simpler model may be enough, and it is easier to explain.",
            "same": f"This model's predictions are about as close to the truth as those of {name} ({scores}; "
                    "a difference this small is within what chance gives on this many rows). The simpler model "
                    "may be enough.",
        }[lift["verdict"]]
        if result["lift_simplest"]["verdict"] != "better":
            notes.append(f"It is not clearly better than always predicting the average ({number(simplest['mae'])} "
                         "off on average): check that it learned anything at all.")
    notes.append(LEAKAGE_NOTE)
    if result["features"]["left_out"]:
        notes.append("Date inputs left out of the baseline: " + ", ".join(result["features"]["left_out"]) + ".")
    if result["rows"] >= result["max_rows"]:
        notes.append(f"Compared on the first {result['max_rows']:,} rows of the training data.")
    return sentence, notes
