"""Registered models and version metadata: create, validate and edit the describe and lineage fields."""

from __future__ import annotations

import json
import re

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from apps.accounts.models import Project, User
from apps.accounts.permissions import Action, can, require
from apps.audit import services as audit
from apps.datasets.models import DatasetVersion
from apps.registry.models import RegisteredModel

MODEL_FIELDS = ("description", "intended_use", "out_of_scope_uses", "task_type", "risk_tier", "owner", "tags")
VERSION_FIELDS = ("description", "aliases", "tags", "code_repository", "code_commit", "params", "metrics")
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


# --- Registered models ---------------------------------------------------------------------------------------


def create_model(project: Project, *, actor, name: str, **fields) -> RegisteredModel:
    require(actor, Action.IMPORT_MODEL, project)
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the model a name, e.g. “Loan default risk”."]})
    if len(name) > 120:
        raise ValidationError({"name": ["Keep the name under 120 characters."]})
    cleaned = clean_model_fields(project, fields)
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                project=project, name=name, slug=_unique_slug(name), created_by=actor, **cleaned
            )
            audit.record("model.create", actor=actor, obj=model, project=project, details={"name": name})
    except IntegrityError:
        raise ValidationError(
            {"name": [f"{project.name} already has a model called “{name}”. Import a new version of it instead."]}
        ) from None
    return model


def get_or_create_model(project: Project, *, actor, name: str, **fields) -> RegisteredModel:
    existing = RegisteredModel.objects.filter(project=project, name=(name or "").strip()).first()
    return existing or create_model(project, actor=actor, name=name, **fields)


_RESERVED_SLUGS = {"import", "import-mlflow", "new"}  # taken by API and page routes under models/


def _unique_slug(name: str) -> str:
    base = slugify(name)[:100] or "model"
    slug, n = base, 1
    while slug in _RESERVED_SLUGS or RegisteredModel.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def clean_model_fields(project: Project, fields: dict) -> dict:
    """Validate the describe step's fields (shared by the wizard, the API and edits); unknown keys refused."""
    unknown = set(fields) - set(MODEL_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be set here."] for name in sorted(unknown)})
    cleaned = {}
    errors: dict[str, list[str]] = {}
    for key in ("description", "intended_use", "out_of_scope_uses"):
        if key in fields:
            cleaned[key] = str(fields[key] or "").strip()[:10_000]
    if "task_type" in fields:
        if fields["task_type"] not in RegisteredModel.TaskType.values:
            errors["task_type"] = [f"Choose one of: {', '.join(RegisteredModel.TaskType.values)}."]
        else:
            cleaned["task_type"] = fields["task_type"]
    if "risk_tier" in fields:
        if fields["risk_tier"] not in RegisteredModel.RiskTier.values:
            errors["risk_tier"] = [f"Choose one of: {', '.join(RegisteredModel.RiskTier.values)}."]
        else:
            cleaned["risk_tier"] = fields["risk_tier"]
    if "owner" in fields:
        owner = fields["owner"]
        if owner in (None, ""):
            cleaned["owner"] = None
        else:
            user = owner if isinstance(owner, User) else User.objects.filter(username=str(owner)).first()
            if user is None or not project.memberships.filter(user=user).exists():
                errors["owner"] = [f"“{owner}” is not a member of {project.name}. Name a member as the owner."]
            else:
                cleaned["owner"] = user
    if "tags" in fields:
        cleaned["tags"] = _string_dict(fields["tags"], "tags", errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def update_model(model: RegisteredModel, *, actor, **fields) -> RegisteredModel:
    require(actor, Action.EDIT_MODEL, model)
    cleaned = clean_model_fields(model.project, fields)
    changed = {k: v for k, v in cleaned.items() if getattr(model, k) != v}
    if not changed:
        return model
    with transaction.atomic():
        for key, value in changed.items():
            setattr(model, key, value)
        model.save(update_fields=[*changed, "updated_at"])
        audit.record("model.update", actor=actor, obj=model, details={"fields": sorted(changed)})
    return model


# --- Lineage ---------------------------------------------------------------------------------------------------


def clean_lineage(project: Project, actor, data: dict) -> dict:
    """Validate lineage fields: training dataset version (uuid, in this project), target column, code, params."""
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    ref = data.get("training_dataset")
    if ref:
        version = None
        if isinstance(ref, DatasetVersion):
            version = ref
        else:
            try:
                version = DatasetVersion.objects.select_related("dataset").filter(uuid=str(ref)).first()
            except ValidationError:
                version = None
        if version is None or version.project.pk != project.pk or not can(actor, Action.VIEW_PROJECT, version):
            errors["training_dataset"] = ["No dataset version with this id in the project. Pick one from the list."]
        elif version.status != DatasetVersion.Status.READY:
            errors["training_dataset"] = [f"{version} is not profiled yet ({version.get_status_display()})."]
        else:
            cleaned["training_dataset"] = version
            target = str(data.get("target_column") or "").strip()
            if target and target not in [c["name"] for c in version.schema]:
                errors["target_column"] = [f"{version} has no column “{target}”."]
            cleaned["target_column"] = target
    repository = str(data.get("code_repository") or "").strip()
    if repository and not re.match(r"^(https?|ssh|git)://|^git@", repository):
        errors["code_repository"] = ["Give the repository's URL, e.g. https://git.example.org/team/model."]
    cleaned["code_repository"] = repository[:500]
    commit = str(data.get("code_commit") or "").strip()
    if commit and not _COMMIT.match(commit):
        errors["code_commit"] = ["A commit hash is 7 to 64 hexadecimal characters (e.g. 3f9c2ab)."]
    cleaned["code_commit"] = commit.lower()
    cleaned["params"] = _string_dict(data.get("params") or {}, "params", errors)
    cleaned["metrics"] = _number_dict(data.get("metrics") or {}, "metrics", errors)
    requirements = data.get("requirements") or []
    if isinstance(requirements, str):
        requirements = [line.strip() for line in requirements.splitlines() if line.strip()]
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        errors["requirements"] = ["Give library versions as a list, e.g. [\"scikit-learn==1.5.2\"]."]
    cleaned["requirements"] = [r[:200] for r in requirements][:200] if isinstance(requirements, list) else []
    example = data.get("input_example")
    if example not in (None, "", [], {}):
        cleaned["input_example"] = _clean_example(example, errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _parse_json(value, name: str, errors: dict):
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            errors[name] = ["This is not valid JSON."]
            return None
    return value


def _string_dict(value, name: str, errors: dict) -> dict:
    value = _parse_json(value, name, errors)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 500:
        errors[name] = ["Give an object of names to values, e.g. {\"max_depth\": \"5\"} (at most 500)."]
        return {}
    return {str(k)[:250]: str(v)[:500] for k, v in value.items()}


def _number_dict(value, name: str, errors: dict) -> dict:
    value = _parse_json(value, name, errors)
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 500:
        errors[name] = ["Give an object of metric names to numbers, e.g. {\"accuracy\": 0.91}."]
        return {}
    out = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            try:
                number = float(number)
            except (TypeError, ValueError):
                errors[name] = [f"The metric “{key}” is not a number."]
                return {}
        out[str(key)[:250]] = float(number)
    return out


def _clean_example(value, errors: dict) -> dict | None:
    """An input example: a list of records, or {"columns", "data"}; kept as {"columns", "data"}, ≤ 100 rows."""
    value = _parse_json(value, "input_example", errors)
    if value is None:
        return None
    if isinstance(value, dict) and "dataframe_records" in value:
        value = value["dataframe_records"]
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        columns = list(dict.fromkeys(k for r in value for k in r))
        return {"columns": columns, "data": [[r.get(c) for c in columns] for r in value[:100]]}
    if isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):
        return {"columns": [str(c) for c in value["columns"]], "data": value["data"][:100]}
    errors["input_example"] = ["Give a few input rows as a JSON list of objects, e.g. [{\"age\": 42}]."]
    return None
