"""Turn an uploaded model file into a local MLflow model directory without running code from the file.

Safe formats are opened here (skops with an allow-list of types, ONNX without external data, XGBoost
and LightGBM native files, MLflow models whose flavour needs no pickle). Anything that needs pickle comes
back quarantined: the sandboxed conversion in `safety` may still turn it into a safe artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .formats import ModelFileError, check_zip_file, model_root, safe_extract

# Types a skops file may contain beyond what skops trusts by default: scikit-learn's own compiled tree
# structures. Anything else is shown to an admin, who may trust it for that exact file.
SKOPS_ALLOWED_TYPES = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfMultinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.MultinomialLogit",
        "sklearn.ensemble._gb.VerboseReporter",
        "collections.OrderedDict",
        "numpy.ndarray",
    }
)
# MLflow flavours whose loading runs no pickle (given skops types we allow).
_SAFE_LOADERS = {"mlflow.sklearn", "mlflow.onnx", "mlflow.xgboost", "mlflow.lightgbm"}


@dataclass
class Prepared:
    """What an importer made of a file: a model directory to store, or a quarantine verdict."""

    directory: Path | None
    flavor: str
    quarantined: bool = False
    safety: dict = field(default_factory=dict)
    signature: dict | None = None
    input_example: dict | None = None
    requirements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Lineage the source itself recorded (an MLflow run's params, metrics, tags, git commit), applied to the
    # version where the person importing gave none: params, metrics, code_commit, code_repository, mlflow_tags.
    lineage: dict = field(default_factory=dict)


def prepare(path: Path, fmt: str, *, work: Path, sample=None, trusted_types: frozenset[str] = frozenset()) -> Prepared:
    """`sample`: a DataFrame of input rows (training data or an input example) to infer the signature from."""
    if fmt == "skops":
        return _skops(path, work=work, sample=sample, trusted_types=trusted_types)
    if fmt == "onnx":
        return _onnx(path, work=work, sample=sample)
    if fmt == "mlflow":
        return _mlflow_zip(path, work=work, trusted_types=trusted_types)
    if fmt == "xgboost":
        return _xgboost(path, work=work, sample=sample)
    if fmt == "lightgbm":
        return _lightgbm(path, work=work, sample=sample)
    raise ValueError(f"no importer for {fmt!r}")  # pickle and joblib go through safety


# --- Signatures -------------------------------------------------------------------------------------------


def signature_dict(signature) -> dict | None:
    """An MLflow ModelSignature as {"inputs": [{"name", "type"}...], "outputs": [...]} for the database."""
    if signature is None:
        return None
    raw = signature.to_dict()
    return {part: json.loads(raw[part]) if raw.get(part) else [] for part in ("inputs", "outputs")}


def _features(model, sample):
    """The sample's columns the model takes: its recorded feature names, else every column."""
    if sample is None:
        return None
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return sample
    missing = [n for n in names if n not in sample.columns]
    if missing:
        shown = ", ".join(f"“{n}”" for n in missing[:5])
        raise ModelFileError(
            f"The model expects columns the training data does not have: {shown}. Link the dataset version the "
            "model was trained on, or give an input example with those columns."
        )
    return sample[list(names)]


def _infer(model, sample, predict=None):
    """(signature, input example) from predicting a few rows; (None, None) without rows to try."""
    from mlflow.models import infer_signature

    features = _features(model, sample)
    if features is None:
        return None, None
    rows = features.head(100)
    try:
        predictions = (predict or model.predict)(rows)
    except Exception as exc:  # the model's own code failed on real rows: say so, do not crash the job
        raise ModelFileError(
            f"The model could not predict on the training data's first rows ({type(exc).__name__}: {exc}). "
            "Check that the linked dataset version or input example matches what the model was trained on."
        ) from None
    return infer_signature(rows, predictions), rows.head(5)


def _example_dict(example) -> dict | None:
    if example is None:
        return None
    frame = example.astype(object).where(example.notna(), None)
    return {"columns": [str(c) for c in frame.columns], "data": json.loads(frame.to_json(orient="values"))}


def _requirements(*packages: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


# --- skops ----------------------------------------------------------------------------------------------------


def skops_untrusted_types(path: Path) -> list[str]:
    """The types in a skops file that skops does not trust by default (read from its schema, nothing loaded)."""
    import skops.io as sio

    check_zip_file(path)  # skops reads schema.json whole: a zip bomb would fill the worker's memory
    try:
        return sorted(sio.get_untrusted_types(file=str(path)))
    except Exception as exc:  # a damaged archive or schema
        raise ModelFileError(f"The skops file cannot be read ({type(exc).__name__}: {exc}).") from None


def _skops(path: Path, *, work: Path, sample, trusted_types: frozenset[str]) -> Prepared:
    import mlflow.sklearn
    import skops.io as sio

    types = skops_untrusted_types(path)
    unknown = [t for t in types if t not in SKOPS_ALLOWED_TYPES and t not in trusted_types]
    if unknown:
        return Prepared(
            directory=None,
            flavor="sklearn (skops)",
            quarantined=True,
            safety={
                "verdict": "unknown_types",
                "untrusted_types": unknown,
                "summary": f"The file contains {len(unknown)} type(s) the portal does not know: "
                + ", ".join(unknown[:10])
                + ". It stays quarantined until a project admin (not the uploader) reviews and trusts them.",
            },
        )
    refuse_dangerous_types(types)
    try:
        model = sio.load(str(path), trusted=types)
    except Exception as exc:
        raise ModelFileError(f"The skops file could not be loaded ({type(exc).__name__}: {exc}).") from None
    if not hasattr(model, "predict"):
        raise ModelFileError(f"The skops file holds a {type(model).__name__}, which has no predict method.")
    signature, example = _infer(model, sample)
    directory = work / "mlflow-model"
    requirements = _requirements("scikit-learn", "skops", "numpy", "scipy")
    mlflow.sklearn.save_model(
        model,
        str(directory),
        serialization_format="skops",
        skops_trusted_types=types or None,
        signature=signature,
        input_example=example,
        pip_requirements=requirements,
    )
    return Prepared(
        directory=directory,
        flavor="sklearn (skops)",
        safety={"verdict": "safe_format", "types": types, "summary": "skops file; every type it holds is allowed."},
        signature=signature_dict(signature),
        input_example=_example_dict(example),
        requirements=requirements,
        notes=[] if signature else [_no_signature_note()],
    )


def refuse_dangerous_types(types) -> None:
    """Types that run commands, touch files or import code are never loaded, even when an admin trusted them."""
    from .safety.scan import dangerous_reason

    dangerous = [f"{t} ({why})" for t in types if (why := dangerous_reason(t))]
    if dangerous:
        raise ModelFileError(
            "The skops file holds " + "; ".join(dangerous[:8]) + ". Trusting it does not allow loading that in the "
            "portal's worker, so it was not loaded. Re-save the model without it."
        )


def _no_signature_note() -> str:
    return (
        "No signature: the file has none and there was no training dataset or input example to infer it from. "
        "The Try-it form and validation need one; link the training data to add it."
    )


# --- ONNX -----------------------------------------------------------------------------------------------------


def _onnx(path: Path, *, work: Path, sample) -> Prepared:
    import mlflow.onnx
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelFileError(f"The file is not a valid ONNX model ({type(exc).__name__}).") from None
    external = external_tensors(proto)
    if external:
        raise ModelFileError(
            f"The ONNX model keeps {len(external)} weight tensor(s) in external files (for example "
            f"“{external[0]}”). External data is refused: save the model with its weights inside the file "
            "(onnx.save_model(..., save_as_external_data=False)) and upload it again."
        )
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelFileError(f"The ONNX model is not valid: {exc}") from None
    signature, example = _onnx_signature(proto, sample)
    directory = work / "mlflow-model"
    requirements = _requirements("onnx", "onnxruntime", "numpy")
    mlflow.onnx.save_model(
        proto, str(directory), signature=signature, input_example=example, pip_requirements=requirements
    )
    return Prepared(
        directory=directory,
        flavor="onnx",
        safety={"verdict": "safe_format", "summary": "ONNX graph with its weights inside the file."},
        signature=signature_dict(signature),
        input_example=_example_dict(example),
        requirements=requirements,
        notes=[] if signature else [_no_signature_note()],
    )


def external_tensors(proto) -> list[str]:
    """Names of tensors whose data lives in another file: initializers, sparse initializers and node attributes,
    in every subgraph and local function (a check of graph.initializer alone misses a Constant node's value)."""
    from onnx import AttributeProto, TensorProto

    found: list[str] = []

    def tensor(t) -> None:
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            found.append(t.name or "(unnamed)")

    def nodes(items) -> None:
        for node in items:
            for attribute in node.attribute:
                if attribute.type in (AttributeProto.TENSOR, AttributeProto.SPARSE_TENSOR) or attribute.HasField("t"):
                    tensor(attribute.t)
                    tensor(attribute.sparse_tensor.values)
                for t in attribute.tensors:
                    tensor(t)
                for sparse in attribute.sparse_tensors:
                    tensor(sparse.values)
                    tensor(sparse.indices)
                if attribute.HasField("g"):
                    graph(attribute.g)
                for g in attribute.graphs:
                    graph(g)

    def graph(g) -> None:
        for t in g.initializer:
            tensor(t)
        for sparse in g.sparse_initializer:
            tensor(sparse.values)
            tensor(sparse.indices)
        nodes(g.node)

    graph(proto.graph)
    for function in proto.functions:
        nodes(function.node)
    return found


def _onnx_signature(proto, sample):
    """A single 2-D tensor input takes the sample's columns (by position); run it to get the outputs."""
    import numpy as np
    import onnxruntime
    from mlflow.models import infer_signature

    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if sample is None or len(inputs) != 1:
        return None, None
    dims = inputs[0].type.tensor_type.shape.dim
    width = dims[1].dim_value if len(dims) == 2 else 0
    features = sample.select_dtypes("number")
    if width and features.shape[1] != width:
        raise ModelFileError(
            f"The ONNX model takes {width} numeric inputs but the training data has {features.shape[1]} numeric "
            "columns (besides the target). Link the right dataset version or give an input example."
        )
    rows = features.head(100)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    element = onnxruntime_type(inputs[0].type.tensor_type.elem_type)
    outputs = session.run(None, {inputs[0].name: rows.to_numpy().astype(element)})
    return infer_signature(rows.astype(element), np.asarray(outputs[0])), rows.astype(element).head(5)


def onnxruntime_type(elem_type: int):
    import numpy as np
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type) if elem_type else np.float32


# --- MLflow models --------------------------------------------------------------------------------------------


def read_mlmodel(directory: Path) -> dict:
    """The MLmodel file as plain data; YAML tags that build Python objects are refused."""
    try:
        data = yaml.safe_load((directory / "MLmodel").read_text(errors="replace"))
    except yaml.YAMLError as exc:
        raise ModelFileError(
            "The MLmodel file is not plain YAML (Python object tags such as !!python/object are refused): "
            f"{str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict):
        raise ModelFileError("The MLmodel file has no flavors section: it is not an MLflow model.")
    return data


def mlmodel_needs_pickle(mlmodel: dict, trusted_types: frozenset[str] = frozenset()) -> str | None:
    """Why loading this MLflow model would unpickle something (None when it would not)."""
    flavors = mlmodel["flavors"]
    loader = (flavors.get("python_function") or {}).get("loader_module")
    if loader not in _SAFE_LOADERS:
        return f"its python_function flavour loads through {loader or 'custom Python code'}"
    sklearn = flavors.get("sklearn")
    if loader == "mlflow.sklearn":
        if not sklearn or sklearn.get("serialization_format") != "skops":
            return f"its scikit-learn model is stored with {(sklearn or {}).get('serialization_format', 'pickle')}"
        unknown = [
            t
            for t in sklearn.get("skops_trusted_types") or []
            if t not in SKOPS_ALLOWED_TYPES and t not in trusted_types
        ]
        if unknown:
            return "its skops file trusts types the portal does not know: " + ", ".join(unknown[:10])
    return None


def _check_paths_inside(flavors: dict, root: Path) -> None:
    """Every file an MLmodel names (data, pickled_model, code...) must be inside the model directory: MLflow joins
    them to it when loading, so "../../x" or "/x" would load a file from elsewhere on the server."""
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    resolved = root.resolve()
    for text in strings(flavors):
        candidate = text.replace("\\", "/")
        absolute = candidate.startswith("/") or (len(candidate) > 1 and candidate[1] == ":") or "\x00" in candidate
        if absolute or ".." in candidate.split("/") or not (resolved / candidate).resolve().is_relative_to(resolved):
            raise ModelFileError(
                f"The MLmodel file names a file outside the model directory (“{text[:200]}”). It is refused: an "
                "MLflow model must keep every file it uses inside its own folder."
            )


def _check_onnx_files(root: Path) -> None:
    """ONNX files inside an MLflow model get the same refusal of external data as an ONNX upload."""
    import onnx

    for path in root.rglob("*.onnx"):
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001, S112 - an unreadable file fails when the model is loaded, not here
            continue
        external = external_tensors(proto)
        if external:
            raise ModelFileError(
                f"The ONNX model in the zip (“{path.relative_to(root)}”) keeps {len(external)} weight tensor(s) in "
                f"external files (for example “{external[0]}”). External data is refused: save the model with its "
                "weights inside the .onnx file and upload it again."
            )


def _mlflow_zip(path: Path, *, work: Path, trusted_types: frozenset[str]) -> Prepared:
    extracted = work / "extracted"
    extracted.mkdir()
    safe_extract(path, extracted)
    root = model_root(extracted)
    mlmodel = read_mlmodel(root)
    _check_paths_inside(mlmodel["flavors"], root)
    _check_onnx_files(root)
    refuse_dangerous_types((mlmodel["flavors"].get("sklearn") or {}).get("skops_trusted_types") or [])
    signature = None
    raw_signature = mlmodel.get("signature") or {}
    if raw_signature.get("inputs"):
        try:
            signature = {p: json.loads(raw_signature[p]) if raw_signature.get(p) else [] for p in ("inputs", "outputs")}
        except (TypeError, ValueError):
            raise ModelFileError("The MLmodel file's signature is not valid JSON.") from None
    flavors = [f for f in mlmodel["flavors"] if f != "python_function"]
    flavor = ", ".join(flavors) or "python_function"
    from .mlflow_store import requirements_of

    reason = mlmodel_needs_pickle(mlmodel, trusted_types)
    prepared = Prepared(
        directory=root,
        flavor=flavor,
        signature=signature,
        requirements=requirements_of(root),
        notes=[] if signature else [_no_signature_note()],
    )
    if reason:
        prepared.quarantined = True
        prepared.safety = {
            "verdict": "needs_pickle",
            "summary": f"Loading this MLflow model would run pickle: {reason}. It stays quarantined until a "
            "project admin (not the uploader) trusts this exact file.",
        }
    else:
        prepared.safety = {"verdict": "safe_format", "summary": f"MLflow model ({flavor}) that loads without pickle."}
    return prepared


# --- XGBoost and LightGBM native files -------------------------------------------------------------------------


def _xgboost(path: Path, *, work: Path, sample) -> Prepared:
    try:
        import mlflow.xgboost
        import xgboost
    except ImportError:
        raise ModelFileError("XGBoost is not installed on this portal; ask the operators, or upload ONNX.") from None
    booster = xgboost.Booster()
    try:
        booster.load_model(str(path))
    except Exception as exc:
        raise ModelFileError(f"The XGBoost model could not be read ({exc}).") from None
    directory = work / "mlflow-model"
    requirements = _requirements("xgboost", "numpy")
    mlflow.xgboost.save_model(booster, str(directory), pip_requirements=requirements)
    return Prepared(directory=directory, flavor="xgboost", safety={"verdict": "safe_format"}, requirements=requirements)


def _lightgbm(path: Path, *, work: Path, sample) -> Prepared:
    try:
        import lightgbm
        import mlflow.lightgbm
    except ImportError:
        raise ModelFileError("LightGBM is not installed on this portal; ask the operators, or upload ONNX.") from None
    try:
        booster = lightgbm.Booster(model_file=str(path))
    except Exception as exc:
        raise ModelFileError(f"The LightGBM model could not be read ({exc}).") from None
    directory = work / "mlflow-model"
    requirements = _requirements("lightgbm", "numpy")
    mlflow.lightgbm.save_model(booster, str(directory), pip_requirements=requirements)
    return Prepared(
        directory=directory, flavor="lightgbm", safety={"verdict": "safe_format"}, requirements=requirements
    )
