"""Compare two or more versions of a model side by side: metrics, params, signature and lineage."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from apps.accounts.permissions import Action, require
from apps.core.charts import Figure
from apps.registry.models import ModelVersion, RegisteredModel

MAX_COMPARED = 10


def _not_deployed(version: ModelVersion) -> list[dict]:
    return []


# Where a version serves: set by the deployments app (to the registry's right) in its ready(), so the registry
# never imports it. Returns [{"deployment", "environment", "role"}].
deployed_in = _not_deployed


def parse_numbers(raw: str) -> list[int]:
    parts = [p.strip().lstrip("v") for p in str(raw).split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise ValidationError({"versions": ["Give version numbers separated by commas, e.g. 1,2,3."]})
    numbers = list(dict.fromkeys(int(p) for p in parts))
    if not 2 <= len(numbers) <= MAX_COMPARED:
        raise ValidationError({"versions": [f"Choose between 2 and {MAX_COMPARED} versions to compare."]})
    return numbers


def compare_versions(model: RegisteredModel, numbers: list[int], *, user) -> dict:
    """Rows per metric and param (one value per version), the signature and lineage differences."""
    require(user, Action.VIEW_PROJECT, model)
    versions = {v.number: v for v in model.versions.filter(number__in=numbers).select_related(
        "training_dataset__dataset")}
    missing = [n for n in numbers if n not in versions]
    if missing:
        raise ValidationError({"versions": [f"{model.name} has no version {', '.join(f'v{n}' for n in missing)}."]})
    ordered = [versions[n] for n in numbers]
    return {
        "model": model.slug,
        "versions": [_summary(v) for v in ordered],
        "metrics": _table([v.metrics for v in ordered]),
        "params": _table([v.params for v in ordered]),
        "signature": _signature_diff(ordered),
        "lineage": _lineage_diff(ordered),
    }


def _summary(version: ModelVersion) -> dict:
    return {
        "number": version.number,
        "id": str(version.uuid),
        "status": version.status,
        "flavor": version.flavor,
        "created_at": version.created_at.isoformat(),
        "aliases": version.aliases,
        "deployed_in": deployed_in(version),
    }


def _table(dicts: list[dict]) -> list[dict]:
    names = sorted({k for d in dicts for k in (d or {})})
    rows = []
    for name in names:
        values = [(d or {}).get(name) for d in dicts]
        rows.append({"name": name, "values": values, "differs": len({repr(v) for v in values}) > 1})
    return rows


def _columns(version: ModelVersion, part: str) -> dict[str, str]:
    columns = (version.signature or {}).get(part, [])
    return {str(c.get("name", i)): str(c.get("type", "")) for i, c in enumerate(columns)}


def _signature_diff(versions: list[ModelVersion]) -> list[dict]:
    """Per later version: inputs added, removed or changed type against the first one."""
    base = _columns(versions[0], "inputs")
    out = []
    for version in versions[1:]:
        other = _columns(version, "inputs")
        out.append({
            "base": versions[0].number,
            "other": version.number,
            "added": sorted(set(other) - set(base)),
            "removed": sorted(set(base) - set(other)),
            "changed": [{"name": n, "from": base[n], "to": other[n]} for n in sorted(set(base) & set(other))
                        if base[n] != other[n]],
        })
    return out


def _lineage_diff(versions: list[ModelVersion]) -> list[dict]:
    def training(v: ModelVersion) -> str:
        return str(v.training_dataset) if v.training_dataset_id else ""

    fields = [
        ("training_dataset", "Training data", training),
        ("code_repository", "Code repository", lambda v: v.code_repository),
        ("code_commit", "Commit", lambda v: v.code_commit),
        ("requirements", "Libraries", lambda v: ", ".join(v.requirements)),
        ("format", "Imported from", lambda v: v.get_format_display()),
    ]
    rows = []
    for key, label, get in fields:
        values = [get(v) for v in versions]
        rows.append({"name": key, "label": label, "values": values, "differs": len(set(values)) > 1})
    return rows


def metrics_chart(versions: list[ModelVersion]):
    """Each metric across versions (a line per metric), or None when no version has metrics."""
    ordered = sorted(versions, key=lambda v: v.number)
    names = sorted({k for v in ordered for k in (v.metrics or {})})
    if not names:
        return None
    figure = Figure()
    for name in names[:12]:
        points = [(f"v{v.number}", v.metrics[name]) for v in ordered if name in (v.metrics or {})]
        figure.add_scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers", name=name)
    return figure.update_layout(height=320, margin={"l": 40, "r": 10, "t": 30, "b": 40}, title="Metrics by version",
                                xaxis={"title": "Version"}, yaxis={"title": "Value"}, legend={"title": "Metric"})
