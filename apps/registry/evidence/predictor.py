"""Loading a version's pyfunc once per process, and "Try it": one row in, a prediction and its top reasons out."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.registry import mlflow_store
from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

CACHE_SIZE = 8
_cache: OrderedDict[tuple[str, str], object] = OrderedDict()
_cache_lock = threading.Lock()

_INTEGER_TYPES = {"long": "int64", "integer": "int32"}
_FLOAT_TYPES = {"double": "float64", "float": "float32"}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
TOP_CONTRIBUTIONS = 5


class PredictionFailed(Exception):
    """The model itself raised on valid input; the message is safe to show."""


def load_predictor(version: ModelVersion):
    """The version's MLflow pyfunc, loaded once per process (keyed by version and artifact digest)."""
    if not version.is_servable or not version.mlflow_model_uri:
        raise ValidationError(
            {"version": [f"{version} is {version.get_status_display().lower()}: it cannot run until it is "
                         "imported safely or a project admin trusts the file."]}
        )
    key = (str(version.uuid), version.artifact_sha256)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    import mlflow.pyfunc

    mlflow_store.configure()
    # Loaded outside the lock: a slow load must not stall predictions of already-cached versions.
    model = mlflow.pyfunc.load_model(mlflow_store.artifact_location(version.mlflow_model_uri, version.artifact_sha256))
    with _cache_lock:
        _cache[key] = model
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return model


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def raw_model(predictor):
    """The native estimator behind a pyfunc (scikit-learn flavours), or None."""
    try:
        return predictor.get_raw_model()
    except Exception:  # not every flavour implements it; the pyfunc path still works
        return None


# --- Inputs ---------------------------------------------------------------------------------------------------


def input_columns(version: ModelVersion) -> list[dict]:
    """The signature's named columns ({"name", "type", "required"}); tensor signatures have none."""
    return [c for c in (version.signature or {}).get("inputs", []) if c.get("name")]


def convert_inputs(version: ModelVersion, inputs: dict) -> dict:
    """Each signature field present and converted to its type; a ValidationError names every bad field."""
    columns = input_columns(version)
    if not columns:
        raise ValidationError({"inputs": ["This version has no named input signature, so there is no form to try it "
                                          "with. Link a training dataset or an input example when importing."]})
    if not isinstance(inputs, dict):
        raise ValidationError({"inputs": ["Give the inputs as an object of column names to values."]})
    errors: dict[str, list[str]] = {}
    row: dict = {}
    for column in columns:
        name, kind = column["name"], column.get("type", "string")
        raw = inputs.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if column.get("required", True):
                errors[name] = [f"Enter a value for “{name}”."]
            else:
                row[name] = None
            continue
        try:
            row[name] = _convert(raw, kind)
        except ValueError as exc:
            errors[name] = [str(exc)]
    unknown = sorted(set(inputs) - {c["name"] for c in columns})
    for name in unknown:
        errors[name] = [f"The model has no input called “{name}”."]
    if errors:
        raise ValidationError(errors)
    return row


def _convert(raw, kind: str):
    text = str(raw).strip()
    if kind in _INTEGER_TYPES:
        if isinstance(raw, bool):
            raise ValueError("Enter a whole number.")
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"“{text}” is not a whole number.") from None
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"“{text}” is not a whole number.")
        return int(number)
    if kind in _FLOAT_TYPES:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"“{text}” is not a number.") from None
        if not math.isfinite(number):
            raise ValueError("Enter a finite number.")
        return number
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("Choose true or false.")
    if kind == "datetime":
        import pandas as pd

        try:
            return pd.Timestamp(text)
        except (ValueError, TypeError):
            raise ValueError(f"“{text}” is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM).") from None
    return text


def frame_for(version: ModelVersion, rows: list[dict]):
    """Rows as a DataFrame with the signature's column order and dtypes (what schema enforcement expects)."""
    import pandas as pd

    columns = input_columns(version)
    frame = pd.DataFrame(rows, columns=[c["name"] for c in columns])
    for column in columns:
        dtype = _INTEGER_TYPES.get(column.get("type")) or _FLOAT_TYPES.get(column.get("type"))
        if dtype and not frame[column["name"]].isna().any():
            frame[column["name"]] = frame[column["name"]].astype(dtype)
    return frame


# --- Reference values: what "typical" means for each feature --------------------------------------------------


def reference_values(version: ModelVersion) -> dict:
    """A typical value per input: the training profile's median (numbers) or most common value, else the example's."""
    values: dict = {}
    profile = version.training_dataset.profile if version.training_dataset_id else None
    by_name = {c["name"]: c for c in (profile or {}).get("columns", [])}
    example = version.input_example or {}
    example_columns = example.get("columns") or []
    for column in input_columns(version):
        name, kind = column["name"], column.get("type", "string")
        stats = by_name.get(name) or {}
        value = None
        numeric = stats.get("numeric") or {}
        if kind in _INTEGER_TYPES or kind in _FLOAT_TYPES:
            value = (numeric.get("quantiles") or {}).get("p50", numeric.get("mean"))
        elif stats.get("top_values"):
            value = stats["top_values"][0]["value"]
        if value is None and name in example_columns and example.get("data"):
            index = example_columns.index(name)
            column_values = sorted((r[index] for r in example["data"] if r[index] is not None), key=str)
            value = column_values[len(column_values) // 2] if column_values else None
        if value is not None:
            try:
                values[name] = _convert(value, kind)
            except ValueError:
                continue
    return values


# --- Try it ---------------------------------------------------------------------------------------------------


def _to_python(value):
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # timestamps and other objects: shown and audited as text


def _first_predictions(output) -> list:
    """Pyfunc outputs come as arrays, Series or DataFrames (ONNX: one column per output); the first column."""
    import numpy as np
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        output = output.iloc[:, 0]
    array = np.asarray(output)
    if array.ndim > 1:
        array = array[:, 0] if array.shape[1] == 1 else array.argmax(axis=1)
    return [_to_python(v) for v in array]


def score_rows(predictor, frame) -> tuple[list, list | None, list | None]:
    """(predictions, class probabilities per row or None, class labels or None) for a frame of rows."""
    impl = getattr(predictor, "_model_impl", None)
    if hasattr(impl, "rt") and len(getattr(impl, "inputs", ())) == 1:
        return _score_onnx(impl, frame)
    predictions = _first_predictions(predictor.predict(frame))
    native = raw_model(predictor)
    if native is not None and hasattr(native, "predict_proba"):
        try:
            probabilities = native.predict_proba(frame)
            classes = [_to_python(c) for c in getattr(native, "classes_", range(probabilities.shape[1]))]
            return predictions, probabilities.tolist(), classes
        except Exception as exc:  # some estimators expose predict_proba but refuse it (SVC without probability)
            logger.debug("predict_proba unavailable for %s: %s", type(native).__name__, exc)
    return predictions, None, None


def _score_onnx(impl, frame) -> tuple[list, list | None, list | None]:
    """ONNX classifiers: MLflow's DataFrame path flattens the (rows, classes) probability output and fails
    ("All arrays must be of the same length"), so the wrapper is given the matrix and answers every output.
    Inputs were already checked against the signature. Class labels are the probability columns' positions,
    which is what skl2onnx produces for integer-labelled classifiers."""
    import numpy as np

    outputs = list(impl.predict(frame.to_numpy()).values())
    predictions = _first_predictions(outputs[0])
    matrices = [np.asarray(o) for o in outputs[1:] if np.asarray(o).ndim == 2 and len(np.asarray(o)) == len(frame)]
    if matrices:
        return predictions, matrices[0].astype(float).tolist(), list(range(matrices[0].shape[1]))
    return predictions, None, None


def _scores(predictions: list, probabilities: list | None, classes: list | None, predicted) -> list[float]:
    """One number per row to compare against the original row: P(predicted class), the value, or "same label"."""
    if probabilities is not None and classes and predicted in classes:
        index = classes.index(predicted)
        return [row[index] for row in probabilities]
    if all(isinstance(p, int | float) and not isinstance(p, bool) for p in predictions):
        return [float(p) for p in predictions]
    return [1.0 if p == predicted else 0.0 for p in predictions]


def predict(version: ModelVersion, *, actor, inputs: dict) -> dict:
    """Try the model on one row: its prediction, class probabilities if it has them, and the top contributions.

    Contributions are "what if this feature were typical": each feature in turn is set to the training median
    (numbers) or most common value, and the change in the predicted class's probability (or the predicted value)
    is its effect. SHAP would be more principled, but it is not installed and its model-agnostic explainer needs
    hundreds of predictions and a background sample per row; this is one batched predict of n+1 rows, fast
    enough for an interactive form and easy to explain to a stakeholder.
    """
    require(actor, Action.PREDICT, version)
    row = convert_inputs(version, inputs)
    predictor = load_predictor(version)
    reference = reference_values(version)
    varied = [name for name in row if name in reference and reference[name] != row[name]]
    rows = [row] + [{**row, name: reference[name]} for name in varied]
    try:
        predictions, probabilities, classes = score_rows(predictor, frame_for(version, rows))
    except Exception as exc:
        logger.info("try-it on %s failed: %s", version, exc)
        raise PredictionFailed(
            f"The model could not predict on these inputs ({type(exc).__name__}: {str(exc)[:300]}). "
            "Check the values against the signature; if they look right, the model itself is failing."
        ) from None
    predicted = predictions[0]
    scores = _scores(predictions, probabilities, classes, predicted)
    contributions = [
        {"feature": name, "value": _to_python(row[name]), "reference": _to_python(reference[name]),
         "effect": round(scores[0] - scores[i + 1], 6)}
        for i, name in enumerate(varied)
    ]
    contributions.sort(key=lambda c: abs(c["effect"]), reverse=True)
    result = {"prediction": predicted,
              "contributions": [c for c in contributions if c["effect"]][:TOP_CONTRIBUTIONS]}
    if probabilities is not None:
        result["probabilities"] = {str(c): round(p, 6) for c, p in zip(classes, probabilities[0], strict=False)}
        result["effect_of"] = f"probability of {predicted}"
    else:
        result["effect_of"] = "predicted value"
    with transaction.atomic():
        audit.record("model.try", actor=actor, obj=version,
                     details={"version": version.number, "prediction": str(predicted)[:200]})
    return result
