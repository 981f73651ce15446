"""A new pickle/joblib upload: scan it, convert it to skops in the sandbox, check the predictions match.

Flagged globals stop everything before the sandbox: a scikit-learn model has no reason to import them, and
not running the file at all is cheaper than trusting the sandbox to hold it. A clean or incomplete scan is
only a signal; the sandbox is what keeps the file's code away from the worker.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from apps.registry import importers
from apps.registry.formats import ModelFileError

from . import sandbox
from .scan import ScanResult, scan_file

RTOL = 1e-6
ATOL = 1e-9
FLAVOR = "sklearn (skops, converted from pickle)"


def examine_pickle(path: Path, fmt: str, *, work: Path, sample, progress: Callable[[int, str], None]) \
        -> importers.Prepared:
    """A Prepared MLflow directory when the sandboxed conversion gives the same predictions; else quarantine."""
    progress(0, "Scanning the file's pickle opcodes…")
    scan = scan_file(path, fmt)
    safety = {"scan": scan.as_dict()}
    if scan.bomb:
        return _quarantine(safety, "bomb", f"The {fmt} file was not opened: {scan.problem} (a decompression bomb "
                                           "would exhaust the server's memory or disk). It stays quarantined.")
    if scan.flagged:
        return _quarantine(safety, "flagged", _flagged_summary(scan, fmt))
    if sandbox.bwrap_path() is None:
        return _quarantine(safety, "no_sandbox", _NO_SANDBOX)
    box = work / "sandbox"
    box.mkdir()
    sample_path = box / "sample.parquet"
    if sample is not None:
        frame = sample.copy()
        frame.columns = [str(c) for c in frame.columns]
        frame.to_parquet(sample_path, index=False)
    progress(20, "Opening the file in the sandbox and converting it to skops…")
    try:
        outcome = sandbox.run_child(path, fmt, box)
    except sandbox.SandboxUnavailable as exc:
        return _quarantine(safety, "no_sandbox", f"{_NO_SANDBOX} ({exc})")
    safety["conversion"] = outcome.as_dict()
    if not outcome.ok:
        where = {"load": "opening it", "convert": "converting it to skops", "predict": "predicting on the sample"}
        return _quarantine(safety, "conversion_failed",
                           f"The sandboxed conversion failed while {where.get(outcome.stage, 'running')}: "
                           f"{outcome.error} It stays quarantined.")
    progress(70, "Checking the converted model…")
    return _check_converted(box, sample_path if sample is not None else None, safety, progress)


_NO_SANDBOX = (
    "The server cannot open pickles safely: bubblewrap (the sandbox) is not available on the worker, so the "
    "file was not opened. Ask the operators to install the Debian package bubblewrap, or upload the model as "
    "skops, ONNX or an MLflow model."
)


def _flagged_summary(scan: ScanResult, fmt: str) -> str:
    shown = "; ".join(f"{f['global']} ({f['why']})" for f in scan.flagged[:8])
    more = f" and {len(scan.flagged) - 8} more" if len(scan.flagged) > 8 else ""
    return (f"The {fmt} file would import {shown}{more}. A scikit-learn model does not need these, so the file "
            "was not opened. It stays quarantined; re-save the model with skops, or have a project admin (not the "
            "uploader) review it.")


def _quarantine(safety: dict, verdict: str, summary: str) -> importers.Prepared:
    return importers.Prepared(directory=None, flavor="pickle", quarantined=True,
                              safety={**safety, "verdict": verdict, "summary": summary})


def _check_converted(box: Path, sample_path: Path | None, safety: dict, progress) -> importers.Prepared:
    import numpy as np
    import skops.io as sio

    converted = box / "model.skops"
    try:
        types = importers.skops_untrusted_types(converted)
    except ModelFileError as exc:
        return _quarantine(safety, "conversion_failed", f"The converted file is not usable: {exc}")
    unknown = [t for t in types if t not in importers.SKOPS_ALLOWED_TYPES]
    if unknown:
        return _quarantine({**safety, "untrusted_types": unknown}, "unknown_types",
                           f"The converted model contains {len(unknown)} type(s) the portal does not know: "
                           + ", ".join(unknown[:10]) + ". It stays quarantined.")
    model = sio.load(str(converted), trusted=types)  # only allow-listed types: no code from the upload runs
    if sample_path is None:
        safety["equivalence"] = {"checked": False}
        return _quarantine(safety, "converted_unchecked",
                           "Converted to skops in the sandbox, but its predictions could not be compared with the "
                           "original's: there are no input rows. Link the training dataset version or give an "
                           "input example, then import it again. It stays quarantined.")
    import pandas as pd

    rows = pd.read_parquet(sample_path)  # the exact rows the sandbox predicted on
    try:
        expected = np.load(box / "predictions.npy", allow_pickle=False)
        actual = np.asarray(model.predict(importers._features(model, rows)))
    except (ModelFileError, OSError, ValueError) as exc:
        return _quarantine(safety, "not_equivalent", f"The converted model could not be checked: {exc}")
    matching = same_predictions(expected, actual)
    safety["equivalence"] = {"rows": int(len(actual)), "matching": matching}
    if not matching:
        return _quarantine(safety, "not_equivalent",
                           "The model converted to skops does not give the same predictions as the original on the "
                           f"{len(actual)} sample rows. It stays quarantined.")
    progress(85, "Writing the converted model…")
    return _mlflow_directory(model, types, rows, box.parent, safety)


def same_predictions(expected, actual) -> bool:
    """Exact for classes and integers, within RTOL/ATOL for floats."""
    import numpy as np

    if actual.dtype == object:
        actual = actual.astype(str)
    if expected.shape != actual.shape:
        return False
    if np.issubdtype(expected.dtype, np.floating) or np.issubdtype(actual.dtype, np.floating):
        try:
            return bool(np.allclose(expected.astype(float), actual.astype(float), rtol=RTOL, atol=ATOL,
                                    equal_nan=True))
        except (TypeError, ValueError):
            return False
    return bool(np.array_equal(expected, actual))


def _mlflow_directory(model, types: list[str], rows, work: Path, safety: dict) -> importers.Prepared:
    import mlflow.sklearn

    signature, example = importers._infer(model, rows)
    requirements = importers._requirements("scikit-learn", "skops", "numpy", "scipy")
    directory = work / "mlflow-model"
    mlflow.sklearn.save_model(model, str(directory), serialization_format="skops", skops_trusted_types=types or None,
                              signature=signature, input_example=example, pip_requirements=requirements)
    rows_checked = safety["equivalence"]["rows"]
    return importers.Prepared(
        directory=directory,
        flavor=FLAVOR,
        quarantined=False,
        safety={**safety, "verdict": "converted", "types": types,
                "summary": f"Opened only in the sandbox and converted to skops; the converted model gives the same "
                           f"predictions as the original on {rows_checked} rows. The original file is not served."},
        signature=importers.signature_dict(signature),
        input_example=importers._example_dict(example),
        requirements=requirements,
    )
