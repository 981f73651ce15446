"""A version after import: edit its labels and lineage text, archive/restore, trust, examine again."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.registry.models import ModelVersion
from apps.registry.services.imports import _queue_import
from apps.registry.services.metadata import _ALIAS, VERSION_FIELDS, _string_dict, clean_lineage

# --- Versions: metadata, archive, restore, trust ---------------------------------------------------------------


def update_version(version: ModelVersion, *, actor, **fields) -> ModelVersion:
    """Edit a version's labels and lineage text; its artifact, signature and status never change here."""
    require(actor, Action.EDIT_MODEL, version)
    unknown = set(fields) - set(VERSION_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field is read-only."] for name in sorted(unknown)})
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    if "description" in fields:
        cleaned["description"] = str(fields["description"] or "").strip()[:10_000]
    if "aliases" in fields:
        aliases = fields["aliases"]
        if not isinstance(aliases, list) or not all(isinstance(a, str) and _ALIAS.match(a) for a in aliases):
            errors["aliases"] = ["Aliases are short names of letters, digits, “-”, “_” or “.” (e.g. champion)."]
        else:
            cleaned["aliases"] = sorted(set(aliases))
    if "tags" in fields:
        cleaned["tags"] = {**_string_dict(fields["tags"], "tags", errors)}
    lineage = {k: fields[k] for k in ("code_repository", "code_commit", "params", "metrics") if k in fields}
    if lineage:
        try:
            checked = clean_lineage(version.project, actor, lineage)
        except ValidationError as exc:
            errors.update(exc.message_dict)
        else:
            cleaned.update({k: checked[k] for k in lineage})
    if errors:
        raise ValidationError(errors)
    changed = {k: v for k, v in cleaned.items() if getattr(version, k) != v}
    if not changed:
        return version
    with transaction.atomic():
        if "aliases" in changed:  # an alias names one version of a model at a time
            for other in version.model.versions.exclude(pk=version.pk):
                kept = [a for a in other.aliases if a not in changed["aliases"]]
                if kept != other.aliases:
                    ModelVersion.objects.filter(pk=other.pk).update(aliases=kept)
        for key, value in changed.items():
            setattr(version, key, value)
        version.save(update_fields=list(changed))
        audit.record("model.version_update", actor=actor, obj=version, details={"fields": sorted(changed)})
    return version


def archive_version(version: ModelVersion, *, actor) -> ModelVersion:
    require(actor, Action.ARCHIVE_MODEL, version)
    with transaction.atomic():
        updated = ModelVersion.objects.filter(
            pk=version.pk, status__in=[ModelVersion.Status.READY, ModelVersion.Status.QUARANTINED,
                                       ModelVersion.Status.FAILED]
        ).update(status=ModelVersion.Status.ARCHIVED, status_before_archive=version.status)
        if not updated:
            state = version.get_status_display().lower()
            raise ValidationError({"status": [f"{version} cannot be archived while it is {state}."]})
        audit.record("model.archive", actor=actor, obj=version, details={"version": version.number})
    version.refresh_from_db()
    return version


def restore_version(version: ModelVersion, *, actor) -> ModelVersion:
    require(actor, Action.ARCHIVE_MODEL, version)
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.ARCHIVED).update(
            status=version.status_before_archive or ModelVersion.Status.READY, status_before_archive=""
        )
        if not updated:
            raise ValidationError({"status": [f"{version} is not archived."]})
        audit.record("model.restore", actor=actor, obj=version, details={"version": version.number})
    version.refresh_from_db()
    return version


def trust_version(version: ModelVersion, *, actor, comment: str = "") -> ModelVersion:
    """A project admin other than the uploader trusts this exact quarantined file; it is then stored as-is."""
    require(actor, Action.TRUST_MODEL, version)
    if version.created_by_id == actor.pk:
        raise ValidationError({"actor": ["You imported this version; another project admin must trust it."]})
    if version.status != ModelVersion.Status.QUARANTINED:
        raise ValidationError({"status": [f"{version} is not quarantined ({version.get_status_display().lower()})."]})
    if version.trusted_sha256 == version.sha256 and version.trusted_by_id:
        raise ValidationError({"status": [f"{version} is already trusted."]})
    with transaction.atomic():
        updated = ModelVersion.objects.filter(
            pk=version.pk, status=ModelVersion.Status.QUARANTINED, trusted_sha256=""
        ).update(trusted_by=actor, trusted_at=timezone.now(), trusted_sha256=version.sha256)
        if not updated:
            raise ValidationError({"status": [f"{version} was trusted or changed meanwhile; reload the page."]})
        version.refresh_from_db()
        version.import_job = _queue_import(version, actor=actor, trusted=True)
        version.save(update_fields=["import_job"])
        audit.record("model.trust", actor=actor, obj=version,
                     details={"version": version.number, "sha256": version.sha256, "comment": comment[:1000],
                              "safety": version.safety.get("verdict", "")})
    return version


def reexamine_version(version: ModelVersion, *, actor, lineage: dict | None = None) -> ModelVersion:
    """Import a quarantined (untrusted) or failed version again, after linking training data or an example.

    This is how a pickle whose conversion could not be checked (no rows to compare predictions on) becomes
    ready without anyone trusting it: link the rows, and the sandboxed conversion runs again.
    """
    require(actor, Action.IMPORT_MODEL, version)
    if version.status not in (ModelVersion.Status.QUARANTINED, ModelVersion.Status.FAILED) or version.trusted_sha256:
        raise ValidationError({"status": [f"{version} is {version.get_status_display().lower()}; only quarantined "
                                          "(untrusted) or failed imports can be examined again."]})
    if not version.file_name:
        raise ValidationError({"status": [f"{version} has no uploaded file to examine again; import it again."]})
    allowed = {"training_dataset", "target_column", "input_example"}
    unknown = set(lineage or {}) - allowed
    if unknown:
        raise ValidationError({name: ["This field cannot be set here."] for name in sorted(unknown)})
    cleaned = clean_lineage(version.project, actor, {k: v for k, v in (lineage or {}).items() if v not in (None, "")})
    with transaction.atomic():
        fields = {"status": ModelVersion.Status.IMPORTING, "error": "", "safety": {}}
        if cleaned.get("training_dataset"):
            fields["training_dataset"] = cleaned["training_dataset"]
            fields["tags"] = {**version.tags, "target_column": cleaned.get("target_column", "")}
        if cleaned.get("input_example"):
            fields["input_example"] = cleaned["input_example"]
        updated = ModelVersion.objects.filter(
            pk=version.pk, status=version.status, trusted_sha256=""
        ).update(**fields)
        if not updated:
            raise ValidationError({"status": [f"{version} changed meanwhile; reload the page."]})
        version.refresh_from_db()
        version.import_job = _queue_import(version, actor=actor)
        version.save(update_fields=["import_job"])
        audit.record("model.reexamine", actor=actor, obj=version,
                     details={"version": version.number, "linked": sorted(k for k in cleaned if cleaned[k])})
    return version
