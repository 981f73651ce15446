"""What the model card shows, gathered once from stored rows (the page and the HTML export share it)."""

from __future__ import annotations

from apps.accounts.permissions import Action, can
from apps.core.models import Job
from apps.datasets.models import DatasetVersion, redact_profile
from apps.registry.evidence.explain import explain_problem
from apps.registry.evidence.optimise import optimise_problem
from apps.registry.evidence.predictor import input_columns, reference_values
from apps.registry.models import ModelVersion

MAX_SELECT_CHOICES = 20
_INTEGER, _FLOAT = {"long", "integer"}, {"double", "float"}


def training_summary(version: ModelVersion, user) -> dict | None:
    """The linked dataset version and its profile's headline numbers, with PII hidden as its page hides it."""
    dataset_version = version.training_dataset
    if dataset_version is None:
        return None
    profile = redact_profile(dataset_version.profile, dataset_version.hidden_columns_for(user)) or {}
    return {
        "version": dataset_version,
        "dataset": dataset_version.dataset,
        "rows": profile.get("row_count"),
        "columns": profile.get("column_count", len(profile.get("columns", []))),
        "warnings": len(profile.get("warnings", [])),
        "target_column": (version.tags or {}).get("target_column", ""),
        "profile": profile,
    }


def try_fields(version: ModelVersion, user, training: dict | None) -> list[dict]:
    """One form field per signature input: its widget, the training range or categories, a starting value."""
    columns = {c["name"]: c for c in ((training or {}).get("profile") or {}).get("columns", [])}
    example = version.input_example or {}
    first = dict(zip(example.get("columns") or [], (example.get("data") or [[]])[0], strict=False))
    typical = reference_values(version)
    fields = []
    for index, column in enumerate(input_columns(version)):
        name, kind = column["name"], column.get("type", "string")
        stats = columns.get(name) or {}
        field = {"name": name, "type": kind, "id": f"try-{index}", "required": column.get("required", True),
                 "value": first.get(name, typical.get(name, "")), "hint": "", "choices": None}
        numeric = stats.get("numeric") or {}
        if kind in _INTEGER | _FLOAT:
            field["widget"] = "number"
            field["step"] = "1" if kind in _INTEGER else "any"
            if numeric.get("min") is not None and not stats.get("hidden"):
                field["hint"] = f"Training range {numeric['min']:g} – {numeric['max']:g}"
        elif kind == "boolean":
            field.update(widget="select", choices=["true", "false"])
        elif (stats.get("type") in {"categorical", "boolean"} and stats.get("distinct_is_exact")
              and stats.get("top_values") and not stats.get("hidden")
              and len(stats["top_values"]) >= (stats.get("distinct") or 0)
              and len(stats["top_values"]) <= MAX_SELECT_CHOICES):
            field.update(widget="select", choices=[str(t["value"]) for t in stats["top_values"]],
                         hint=f"{len(stats['top_values'])} categories in the training data")
        else:
            field["widget"] = "text"
            if kind == "datetime":
                field["hint"] = "A date, e.g. 2024-05-31"
        field["value"] = "" if field["value"] is None else str(field["value"])
        fields.append(field)
    return fields


def latest_job(version: ModelVersion, kind: str) -> Job | None:
    return Job.objects.filter(kind=kind, params__version=str(version.uuid)).order_by("-created_at").first()


def card_facts(version: ModelVersion, user) -> dict:
    """Everything on the card for this user: facts, evidence, and what they may do."""
    training = training_summary(version, user)
    optimisation = version.optimisation or {}
    explain_job, optimise_job = latest_job(version, "explain_model"), latest_job(version, "optimise_model")
    may_edit = can(user, Action.EDIT_MODEL, version)
    return {
        "version": version,
        "model": version.model,
        "project": version.project,
        "training": training,
        "try_fields": try_fields(version, user, training) if version.is_servable else [],
        "signature_inputs": (version.signature or {}).get("inputs", []),
        "signature_outputs": (version.signature or {}).get("outputs", []),
        "metrics": sorted((version.metrics or {}).items()),
        "params": sorted((version.params or {}).items()),
        "explainability": version.explainability,
        "explain_job": explain_job if explain_job and not explain_job.is_finished else None,
        "explain_failed": explain_job if explain_job and explain_job.status == Job.Status.FAILED else None,
        "explain_problem": explain_problem(version),
        "validations": list(version.validations.select_related("dataset_version__dataset", "job", "created_by")[:20]),
        "optimisation": optimisation,
        "optimise_job": optimise_job if optimise_job and not optimise_job.is_finished else None,
        "optimise_problem": optimise_problem(version),
        "onnx_variant": version.conversions.order_by("number").first(),
        "conversions_of": version.converted_from,
        "may_predict": can(user, Action.PREDICT, version) and version.is_servable,
        "may_edit": may_edit,
        "may_import": can(user, Action.IMPORT_MODEL, version),
        "may_archive": can(user, Action.ARCHIVE_MODEL, version),
        "may_trust": can(user, Action.TRUST_MODEL, version) and version.created_by_id != user.pk
        and version.status == ModelVersion.Status.QUARANTINED and not version.trusted_sha256,
        "validation_choices": list(
            DatasetVersion.objects.filter(dataset__project=version.project, status=DatasetVersion.Status.READY)
            .select_related("dataset").order_by("dataset__name", "-number")[:200]
        ) if may_edit else [],
        # An unchecked or failed import can run again once training rows are linked (services.reexamine_version).
        "may_reexamine": can(user, Action.IMPORT_MODEL, version) and bool(version.file_name)
        and version.status in (ModelVersion.Status.QUARANTINED, ModelVersion.Status.FAILED)
        and not version.trusted_sha256,
    }
