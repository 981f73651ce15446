"""A pickle a project admin (not the uploader) trusted as this exact file: stored as-is, loaded in the worker."""

from __future__ import annotations

import pickle
from pathlib import Path

from apps.registry import importers
from apps.registry.formats import ModelFileError

from .scan import _NOT_LISTED, flag_reason, is_allowed, scan_file

FLAVOR = "sklearn (pickle, trusted)"


def trusted_pickle_directory(path: Path, fmt: str, *, work: Path, sample) -> importers.Prepared:
    """An MLflow directory holding the pickle as-is (cloudpickle), with a signature when there are rows.

    Trust covers "this model may be served as a pickle", not "run a shell": a file importing known-dangerous
    globals (commands, files, imports, eval) is refused even when trusted, because loading happens here in the
    worker, which holds the portal's credentials.
    """
    import mlflow.sklearn

    scan = scan_file(path, fmt)
    if scan.bomb:
        raise ModelFileError(f"The file was not opened: {scan.problem}. Trusting it does not make that safe to load.")
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


class _Refused(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(f"{name} ({why})")
        self.name = name


# Libraries whose plain functions (not classes) a trusted model may reference, e.g. numpy.log1p in a
# FunctionTransformer; their test helpers are excluded (numpy.testing can run code from a string).
_FUNCTION_LIBRARIES = ("sklearn", "numpy", "scipy", "xgboost", "lightgbm")


def guard(module: str, name: str, found) -> None:
    """Refuse, while unpickling, a global that reaches commands, files, imports or code.

    The scan before trust cannot see everything (joblib's raw array bytes end it early; a compressed stream
    may not decompress), so the same deny-list is enforced again here, on what the unpickler really asks for.
    Plain functions outside the scientific libraries are refused too: with them a pickle builds gadget chains
    (operator.attrgetter, functools.partial...) out of harmless-looking classes.
    """
    full = f"{module}.{name}"
    actual = f"{getattr(found, '__module__', '') or ''}.{getattr(found, '__qualname__', '') or ''}"
    for candidate in (full, actual):
        why = flag_reason(candidate)
        if why and why != _NOT_LISTED:
            raise _Refused(full, why)
    if is_allowed(full) or isinstance(found, type):
        return
    root, *parts = (getattr(found, "__module__", "") or "").split(".")
    if root in _FUNCTION_LIBRARIES and not any("test" in part for part in parts):
        return
    raise _Refused(full, "a function outside scikit-learn, NumPy and SciPy")


class _GuardedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = super().find_class(module, name)
        guard(module, name, found)
        return found


def _guarded_joblib_load(path: Path):
    from joblib import numpy_pickle

    class GuardedNumpyUnpickler(numpy_pickle.NumpyUnpickler):
        def find_class(self, module, name):
            found = super().find_class(module, name)
            guard(module, name, found)
            return found

    with path.open("rb") as handle, numpy_pickle._validate_fileobject_and_memmap(handle, str(path), None) as (
            stream, _):
        if isinstance(stream, str):  # joblib < 0.10 kept arrays in companion files, loaded by another unpickler
            raise ModelFileError("The file was written by a joblib older than 0.10, which the portal cannot open "
                                 "safely. Re-save the model with skops.")
        return GuardedNumpyUnpickler(str(path), stream, True).load()


def _load(path: Path, fmt: str):
    try:
        if fmt == "joblib":
            return _guarded_joblib_load(path)
        with path.open("rb") as handle:
            return _GuardedUnpickler(handle).load()  # noqa: S301 - an admin trusted this exact file; see guard()
    except ModelFileError:
        raise
    except _Refused as exc:
        raise ModelFileError(
            f"The file would import {exc} when loaded. Trusting it does not allow running that in the portal's "
            "worker, so loading was refused. Re-save the model with skops."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the file's own code is the file's problem
        raise ModelFileError(f"The trusted file could not be loaded ({type(exc).__name__}: {exc}).") from None
