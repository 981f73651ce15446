"""Runs inside the sandbox only: unpickle the upload, save it as skops, predict on the sample.

Standalone on purpose (run as `python -I child.py MODEL FORMAT WORKDIR`): it imports nothing from the portal
and can only write WORKDIR. Everything it writes is read back by the parent as untrusted data.
"""

import json
import sys
import traceback


def main(model_path: str, fmt: str, workdir: str) -> int:
    stage = "load"
    result = {"ok": False}
    try:
        model = _load(model_path, fmt)
        result["type"] = f"{type(model).__module__}.{type(model).__qualname__}"
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"the file holds a {type(model).__qualname__}, which has no predict method")
        stage = "convert"
        import skops.io as sio

        sio.dump(model, f"{workdir}/model.skops")
        stage = "predict"
        predictions = _predict(model, workdir)
        result["rows"] = None if predictions is None else int(len(predictions))
        result["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - the parent needs every failure, MemoryError included
        result["stage"] = stage
        result["error"] = f"{type(exc).__name__}: {exc}"[:1000]
        result["trace"] = traceback.format_exc()[-2000:]
    with open(f"{workdir}/result.json", "w") as handle:
        json.dump(result, handle)
    return 0


def _load(model_path: str, fmt: str):
    if fmt == "joblib":
        import joblib

        return joblib.load(model_path)
    import pickle

    with open(model_path, "rb") as handle:
        return pickle.load(handle)  # noqa: S301 - this is the sandbox's whole purpose


def _predict(model, workdir: str):
    import os

    import numpy as np

    sample_path = f"{workdir}/sample.parquet"
    if not os.path.exists(sample_path):
        return None
    import pandas as pd

    sample = pd.read_parquet(sample_path)
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        missing = [n for n in names if n not in sample.columns]
        if missing:
            raise KeyError(f"the sample has no column(s) {', '.join(map(str, missing[:5]))}")
        sample = sample[list(names)]
    predictions = np.asarray(model.predict(sample))
    if predictions.dtype == object:
        predictions = predictions.astype(str)  # written without pickle, so the parent can read it safely
    np.save(f"{workdir}/predictions.npy", predictions, allow_pickle=False)
    return predictions


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
