"""A pickle a project admin (not the uploader) trusted as this exact file: stored as-is, loaded in the worker."""

from __future__ import annotations

import pickle
from pathlib import Path

from apps.registry import importers
from apps.registry.formats import ModelFileError

from .scan import scan_file

FLAVOR = "sklearn (pickle, trusted)"


def trusted_pickle_directory(path: Path, fmt: str, *, work: Path, sample) -> importers.Prepared:
    """An MLflow directory holding the pickle as-is (cloudpickle), with a signature when there are rows.

    Trust covers "this model may be served as a pickle", not "run a shell": a file importing known-dangerous
    globals (commands, files, imports, eval) is refused even when trusted, because loading happens here in the
    worker, which holds the portal's credentials.
    """
    import mlflow.sklearn

    scan = scan_file(path, fmt)
    if scan.dangerous:
        shown = ", ".join(f["global"] for f in scan.dangerous[:8])
        raise ModelFileError(
            f"The file would import {shown} when loaded. Trusting it does not allow running that in the portal's "
            "worker; the file was not opened. Re-save the model with skops."
        )
    model = _load(path, fmt)
    if not callable(getattr(model, "predict", None)):
        raise ModelFileError(f"The file holds a {type(model).__name__}, which has no predict method.")
    signature, example = importers._infer(model, sample)
    requirements = importers._requirements("scikit-learn", "cloudpickle", "numpy", "scipy")
    directory = work / "mlflow-model"
    mlflow.sklearn.save_model(model, str(directory), serialization_format="cloudpickle", signature=signature,
                              input_example=example, pip_requirements=requirements)
    return importers.Prepared(
        directory=directory,
        flavor=FLAVOR,
        quarantined=False,
        safety={"verdict": "trusted", "scan": scan.as_dict(),
                "summary": "Stored as-is (pickle) because a project admin other than the uploader trusted this exact "
                           "file (pinned by SHA-256). Loading it runs its code."},
        signature=importers.signature_dict(signature),
        input_example=importers._example_dict(example),
        requirements=requirements,
    )


def _load(path: Path, fmt: str):
    try:
        if fmt == "joblib":
            import joblib

            return joblib.load(path)
        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 - an admin trusted this exact file; see the docstring
    except Exception as exc:  # noqa: BLE001 - any failure of the file's own code is the file's problem
        raise ModelFileError(f"The trusted file could not be loaded ({type(exc).__name__}: {exc}).") from None
