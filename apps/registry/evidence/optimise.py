"""The ONNX hint: convert a scikit-learn version, check it predicts the same, time both, register the variant."""

from __future__ import annotations

import logging
import statistics
import time

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.core import services as jobs
from apps.core import storage
from apps.core.models import Job
from apps.registry import services
from apps.registry.evidence.explain import training_frame
from apps.registry.evidence.predictor import frame_for, input_columns, load_predictor, raw_model
from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4  # float32 arithmetic in onnxruntime against float64 in scikit-learn
SINGLE_REPEATS, BATCH_REPEATS, BATCH_ROWS = 50, 7, 1000
_NUMERIC = {"long", "integer", "double", "float", "boolean"}


def optimise_problem(version: ModelVersion) -> str | None:
    if not version.flavor.startswith("sklearn"):
        return "Only scikit-learn versions can be converted to ONNX here."
    if not version.is_servable:
        return f"{version} is not servable (it is {version.get_status_display().lower()})."
    columns = input_columns(version)
    if not columns:
        return "The version has no named input signature to build the ONNX input from."
    text = [c for c in columns if c.get("type") not in _NUMERIC]
    if text:
        return f"Only all-numeric inputs are converted; “{text[0]['name']}” is {text[0].get('type')}."
    return None


def start_optimisation(version: ModelVersion, *, actor) -> Job:
    require(actor, Action.EDIT_MODEL, version)
    problem = optimise_problem(version)
    if problem:
        raise ValidationError({"flavor": [problem]})
    from apps.registry.tasks import optimise_version_task

    with transaction.atomic():
        job = jobs.create_job("optimise_model", actor=actor, project=version.project,
                              params={"version": str(version.uuid)},
                              enqueue=optimise_version_task)
        audit.record("model.optimise_started", actor=actor, obj=version, details={"version": version.number})
    return job


def _median_ms(work, repeats: int) -> float:
    work()  # warm-up: first calls pay for allocations and lazy initialisation
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 4)


def _sample_rows(version: ModelVersion):
    frame = training_frame(version, BATCH_ROWS)
    names = [c["name"] for c in input_columns(version)]
    if frame is None or any(name not in frame.columns for name in names):
        example = version.input_example or {}
        if not example.get("columns"):
            return None
        import pandas as pd

        frame = pd.DataFrame(example["data"], columns=example["columns"])
    return frame_for(version, frame[names].dropna().to_dict("records"))


def optimise_version(job_id: str) -> None:
    """The job: skl2onnx conversion, prediction check on sample rows, single-row and 1,000-row latency of both."""
    if not jobs.start_job(job_id):
        return
    job = Job.objects.get(pk=job_id)
    version = ModelVersion.objects.select_related("model__project", "training_dataset").get(uuid=job.params["version"])
    problem = optimise_problem(version)
    if problem:
        _store(version, {"convertible": False, "reason": problem}, job_id)
        return
    import numpy as np
    import onnxruntime
    from skl2onnx import to_onnx

    jobs.report_progress(job_id, 10, "Loading the model and sample rows…")
    native = raw_model(load_predictor(version))
    rows = _sample_rows(version)
    if native is None or rows is None or rows.empty:
        _store(version, {"convertible": False,
                         "reason": "No native scikit-learn model or no sample rows to check the conversion on."},
               job_id)
        return
    matrix = rows.to_numpy().astype(np.float32)
    jobs.report_progress(job_id, 25, "Converting to ONNX…")
    classifier = hasattr(native, "predict_proba")
    try:
        options = {id(native): {"zipmap": False}} if classifier else None
        proto = to_onnx(native, matrix[:1], options=options, target_opset=None)
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        _store(version, {"convertible": False,
                         "reason": f"skl2onnx cannot convert this model ({type(exc).__name__}: {str(exc)[:300]})."},
               job_id)
        return
    input_name = session.get_inputs()[0].name
    jobs.report_progress(job_id, 45, "Checking the ONNX model predicts the same…")
    onnx_out = session.run(None, {input_name: matrix})
    if classifier:
        expected, actual = native.predict_proba(rows), np.asarray(onnx_out[1])
        labels_differ = int((np.asarray(native.predict(rows)) != np.asarray(onnx_out[0]).reshape(-1)).sum())
    else:
        expected, actual = np.asarray(native.predict(rows), dtype=float), np.asarray(onnx_out[0], dtype=float)
        labels_differ = 0
    max_abs_diff = float(np.max(np.abs(expected.reshape(actual.shape) - actual))) if actual.size else 0.0
    matches = max_abs_diff <= TOLERANCE and labels_differ == 0
    jobs.report_progress(job_id, 60, "Timing single-row predictions…")
    one_frame, one_matrix = rows.iloc[:1], matrix[:1]
    reps = int(np.ceil(BATCH_ROWS / len(rows)))
    batch_frame = rows.iloc[np.tile(np.arange(len(rows)), reps)[:BATCH_ROWS]]
    batch_matrix = batch_frame.to_numpy().astype(np.float32)
    single = {"sklearn": _median_ms(lambda: native.predict(one_frame), SINGLE_REPEATS),
              "onnx": _median_ms(lambda: session.run(None, {input_name: one_matrix}), SINGLE_REPEATS)}
    jobs.report_progress(job_id, 80, "Timing 1,000-row predictions…")
    batch = {"sklearn": _median_ms(lambda: native.predict(batch_frame), BATCH_REPEATS),
             "onnx": _median_ms(lambda: session.run(None, {input_name: batch_matrix}), BATCH_REPEATS)}
    stored = storage.save_stream(f"models/converted/{version.uuid}", [proto.SerializeToString()],
                                 filename=f"{version.model.slug}-v{version.number}.onnx")
    result = {
        "convertible": True,
        "matches": matches,
        "max_abs_diff": max_abs_diff,
        "tolerance": TOLERANCE,
        "label_mismatches": labels_differ,
        "rows_checked": len(rows),
        "single_row_ms": single,
        "batch_1000_ms": batch,
        "speedup": round(single["sklearn"] / single["onnx"], 2) if single["onnx"] else None,
        "batch_speedup": round(batch["sklearn"] / batch["onnx"], 2) if batch["onnx"] else None,
        "onnx_file": stored.name,
        "onnx_sha256": stored.sha256,
        "onnx_bytes": stored.size,
        "onnxruntime": onnxruntime.__version__,
    }
    _store(version, result, job_id)


def _store(version: ModelVersion, result: dict, job_id: str) -> None:
    result = {**result, "computed_at": timezone.now().isoformat(), "job": str(job_id)}
    old_file = (version.optimisation or {}).get("onnx_file")
    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk).update(optimisation=result)
        audit.record("model.optimised", actor=None, actor_label="optimisation job", obj=version,
                     details={"version": version.number, "convertible": result["convertible"],
                              "matches": result.get("matches"), "speedup": result.get("speedup")})
    superseded = old_file and old_file != result.get("onnx_file")
    if superseded and not ModelVersion.objects.filter(file_name=old_file).exists():
        transaction.on_commit(lambda: storage.delete(old_file))
    if result["convertible"]:
        message = (f"ONNX runs a single row {result['speedup']}× as fast" if result["matches"]
                   else "Converted, but the ONNX predictions differ; do not register it")
        summary = {"version": str(version.uuid), "matches": result["matches"], "speedup": result["speedup"]}
        jobs.succeed_job(job_id, result=summary, message=message)
    else:
        jobs.fail_job(job_id, error=result["reason"], message="Not convertible to ONNX")


def register_onnx_variant(version: ModelVersion, *, actor) -> ModelVersion:
    """Store the checked ONNX conversion as the model's next version, converted from this one (an import job)."""
    require(actor, Action.IMPORT_MODEL, version)
    optimisation = version.optimisation or {}
    if not optimisation.get("convertible") or not optimisation.get("onnx_file"):
        raise ValidationError({"optimisation": ["Run the ONNX optimisation check first."]})
    if not optimisation.get("matches"):
        raise ValidationError({"optimisation": [
            "The ONNX conversion does not predict the same as the original; it cannot be registered."]})
    existing = version.conversions.exclude(status__in=[ModelVersion.Status.FAILED, ModelVersion.Status.ARCHIVED]) \
        .order_by("number").first()
    if existing is not None:
        raise ValidationError({"optimisation": [f"The ONNX variant is already registered as v{existing.number}."]})
    # A copy, so the new version owns its file whatever a later optimisation run does to the checked one.
    with storage.open_stream(optimisation["onnx_file"]) as handle:
        copy = storage.save_stream("models/incoming", iter(lambda: handle.read(1 << 20), b""),
                                   filename=f"{version.model.slug}-v{version.number}.onnx")
    tags = {"target_column": version.tags["target_column"]} if (version.tags or {}).get("target_column") else {}
    try:
        with transaction.atomic():
            variant = _create_variant(version, actor, copy, tags, optimisation)
            audit.record("model.onnx_registered", actor=actor, obj=version,
                         details={"version": version.number, "variant": variant.number, "sha256": copy.sha256})
    except Exception:
        storage.delete(copy.name)
        raise
    return variant


def _create_variant(version: ModelVersion, actor, copy: storage.StoredFile, tags: dict, optimisation: dict):
    return services.create_version(
        version.model,
        actor=actor,
        description=f"ONNX conversion of v{version.number} (skl2onnx; largest prediction difference "
                    f"{optimisation['max_abs_diff']:.2g}).",
        format=ModelVersion.Format.ONNX,
        original_filename=f"{version.model.slug}-v{version.number}.onnx",
        file_name=copy.name,
        size_bytes=copy.size,
        sha256=copy.sha256,
        training_dataset=version.training_dataset,
        code_repository=version.code_repository,
        code_commit=version.code_commit,
        params=version.params,
        input_example=version.input_example,
        tags=tags,
        converted_from=version,
    )
