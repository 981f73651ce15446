"""The model card's evidence: try-it predictions, feature importance, validations, the ONNX hint, the export.

A package by responsibility; everything callers need is importable from here.
"""

from __future__ import annotations

from apps.registry.evidence.explain import explain_problem, explain_version, start_explain, training_frame
from apps.registry.evidence.export import export_card_html
from apps.registry.evidence.optimise import (
    optimise_problem,
    optimise_version,
    register_onnx_variant,
    start_optimisation,
)
from apps.registry.evidence.predictor import (
    PredictionFailed,
    clear_cache,
    convert_inputs,
    input_columns,
    load_predictor,
    predict,
    reference_values,
)
from apps.registry.evidence.validation import start_validation, validate_version

__all__ = [
    "PredictionFailed", "clear_cache", "convert_inputs", "explain_problem", "explain_version", "export_card_html",
    "input_columns", "load_predictor", "optimise_problem", "optimise_version", "predict", "reference_values",
    "register_onnx_variant", "start_explain", "start_optimisation", "start_validation", "training_frame",
    "validate_version",
]
