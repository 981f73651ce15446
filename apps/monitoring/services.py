"""Monitoring services: ground truth (feedback) and a deployment's monitoring settings.

Labels arrive late, one by one from an app or in bulk from a CSV export of the outcomes. Each names the request
(the `X-Request-ID` the invocations endpoint answered with) and the row within it; the prediction the model made
for that row is copied beside the label so performance is a comparison of two columns. A label for a request not
in the log yet (the log is written a few seconds after the answer) is kept and matched on a later rollup run.
Sending a label again for the same row corrects it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts.permissions import Action, require
from apps.audit import services as audit
from apps.deployments.models import Deployment, PredictionLog
from apps.monitoring.models import GroundTruth, MonitoringSettings

MAX_FEEDBACK_ITEMS = 10_000  # per call; more in one CSV is refused with the count
MAX_CSV_BYTES = 20 * 1024 * 1024
MAX_LABEL_CHARS = 200
MATCH_DAYS = 7  # labels still unmatched after this long stop being looked up on every run


@dataclass
class FeedbackResult:
    received: int
    matched: int
    pending: int  # not (yet) matched to a logged prediction
    corrected: int  # rows that already had a label, replaced

    def as_dict(self) -> dict:
        return {"received": self.received, "matched": self.matched, "pending": self.pending,
                "corrected": self.corrected}


def _clean_label(value):
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError("A label is required.")
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("A label must be a finite number or a text.")
        return value
    if isinstance(value, str):
        if len(value) > MAX_LABEL_CHARS or "\x00" in value:
            raise ValueError(f"A label is at most {MAX_LABEL_CHARS} characters of text.")
        return value.strip()
    raise ValueError("A label is one value: a number, true/false or a text (not a list or an object).")


def clean_items(items) -> list[tuple[str, int, object]]:
    """(request_id, row, label) for each item, or a ValidationError naming the item and the field."""
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise ValidationError({"items": ["Send one {\"request_id\", \"label\"} object or a non-empty list of them."]})
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise ValidationError({"items": [f"At most {MAX_FEEDBACK_ITEMS:,} labels per call (got {len(items):,}); "
                                         "send them in several calls."]})
    cleaned, errors, seen, refused = [], {}, {}, 0
    for index, item in enumerate(items):
        problems: dict[str, list[str]] = {}
        if not isinstance(item, dict):
            problems["non_field_errors"] = ["Each label is an object with request_id and label."]
            item = {}
        request_id = item.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 64:
            problems["request_id"] = ["The request id the prediction answered with (X-Request-ID), at most 64 "
                                      "characters."]
        row = item.get("row", 0)
        if isinstance(row, str) and row.strip().isdigit():
            row = int(row)
        if isinstance(row, bool) or not isinstance(row, int) or row < 0 or row > 10_000_000:
            problems["row"] = ["The row within the request, counted from 0 (default 0)."]
        try:
            label = _clean_label(item.get("label"))
        except ValueError as exc:
            problems["label"] = [str(exc)]
        unknown = set(item) - {"request_id", "row", "label"}
        if unknown:
            problems["non_field_errors"] = [f"Unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}."]
        if not problems:
            key = (request_id.strip(), row)
            if key in seen:
                problems["row"] = [f"Same request and row as item {seen[key]}: send one label per row."]
            else:
                seen[key] = index
                cleaned.append((*key, label))
                continue
        refused += 1
        if len(errors) < 50:  # the first problems name their item and field; the count says how many in all
            errors.update({f"items[{index}].{name}": messages for name, messages in problems.items()})
    if refused:
        raise ValidationError({"items": [f"{refused} of {len(items)} labels were refused; nothing was stored."],
                               **errors})
    return cleaned


def record_feedback(deployment: Deployment, *, actor, items, source: str = "api") -> FeedbackResult:
    """Store labels for logged predictions (all or nothing), copying each row's prediction beside its label."""
    require(actor, Action.SEND_FEEDBACK, deployment)
    cleaned = clean_items(items)
    with transaction.atomic():
        existing = set(GroundTruth.objects.filter(deployment=deployment,
                                                  request_id__in={r for r, _, _ in cleaned})
                       .values_list("request_id", "row"))
        rows = [GroundTruth(deployment=deployment, request_id=request_id, row=row, label=label, source=source,
                            created_by=actor) for request_id, row, label in cleaned]
        _attach_predictions(deployment, rows)
        GroundTruth.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["deployment", "request_id", "row"],
            update_fields=["label", "prediction", "model_version", "predicted_at", "source", "created_by"])
        matched = sum(1 for r in rows if r.predicted_at is not None)
        result = FeedbackResult(received=len(rows), matched=matched, pending=len(rows) - matched,
                                corrected=sum(1 for r in rows if (r.request_id, r.row) in existing))
        audit.record("monitoring.feedback_received", actor=actor, obj=deployment,
                     details={"deployment": deployment.slug, "source": source, **result.as_dict()})
    if result.corrected:
        # A corrected label changes performance of a bucket the rollup cursor already passed: recount it.
        _touch_corrected(deployment, rows, existing)
    return result


def _attach_predictions(deployment: Deployment, rows: list[GroundTruth]) -> None:
    """Copy each labelled row's prediction, version and time from the served (not shadow) log record."""
    wanted = {r.request_id for r in rows}
    logs = {}
    for request_id, version_id, created, outputs in (
            PredictionLog.objects.filter(deployment=deployment, request_id__in=wanted, status_code__lt=400)
            .exclude(role=PredictionLog.Role.SHADOW)
            .values_list("request_id", "model_version_id", "created_at", "outputs")):
        logs[request_id] = (version_id, created, outputs)
    for r in rows:
        found = logs.get(r.request_id)
        if found is None or not isinstance(found[2], list) or r.row >= len(found[2]):
            continue
        r.model_version_id, r.predicted_at, r.prediction = found[0], found[1], found[2][r.row]


def _touch_corrected(deployment, rows, existing) -> None:
    from apps.monitoring import rollups

    buckets = {(deployment.pk, rollups.floor(r.predicted_at, "5m")) for r in rows
               if (r.request_id, r.row) in existing and r.predicted_at is not None}
    if buckets:
        with transaction.atomic():
            rollups.recount(buckets)


def match_pending(now=None) -> set[tuple[int, object]]:
    """Match labels that arrived before their prediction was logged; returns the (deployment id, 5-minute bucket)
    pairs whose performance changed (the rollup cursor follows new ids, and these rows are not new)."""
    from apps.monitoring import rollups

    now = now or timezone.now()
    pending = list(GroundTruth.objects.filter(predicted_at__isnull=True,
                                              created_at__gte=now - timezone.timedelta(days=MATCH_DAYS))
                   .select_related("deployment")[:MAX_FEEDBACK_ITEMS])
    by_deployment: dict[int, list[GroundTruth]] = {}
    for row in pending:
        by_deployment.setdefault(row.deployment_id, []).append(row)
    matched = []
    for rows in by_deployment.values():
        _attach_predictions(rows[0].deployment, rows)
        matched.extend(r for r in rows if r.predicted_at is not None)
    if matched:
        GroundTruth.objects.bulk_update(matched, ["prediction", "model_version", "predicted_at"])
    return {(r.deployment_id, rollups.floor(r.predicted_at, "5m")) for r in matched}


def parse_feedback_csv(uploaded) -> list[dict]:
    """Items from a CSV with a header naming `request_id` and `label` (and optionally `row`)."""
    raw = uploaded.read(MAX_CSV_BYTES + 1)
    if len(raw) > MAX_CSV_BYTES:
        raise ValidationError({"file": [f"The file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB; split it."]})
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError({"file": ["The file is not UTF-8 text: save it as CSV (UTF-8)."]}) from None
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise ValidationError({"file": [f"Not a readable CSV file: {exc}."]}) from None
    missing = {"request_id", "label"} - set(header)
    if missing:
        raise ValidationError({"file": [f"The header must name {' and '.join(sorted(missing))} (found: "
                                        f"{', '.join(header[:10]) or 'no header'})."]})
    reader.fieldnames = header
    items = []
    try:
        for line in reader:
            item = {"request_id": (line.get("request_id") or "").strip(), "label": _csv_value(line.get("label"))}
            if (line.get("row") or "").strip():
                item["row"] = line["row"].strip()
            items.append(item)
            if len(items) > MAX_FEEDBACK_ITEMS:
                break
    except csv.Error as exc:
        raise ValidationError({"file": [f"Line {reader.line_num}: {exc}."]}) from None
    if not items:
        raise ValidationError({"file": ["The file has a header but no labels."]})
    return items


def _csv_value(text: str | None):
    """A CSV cell as the label it stands for: numbers as numbers, true/false as booleans, else the text."""
    text = (text or "").strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text else number


# --- Settings -----------------------------------------------------------------------------------------------


def settings_for(deployment: Deployment) -> MonitoringSettings:
    from apps.monitoring import reference

    return reference.settings_for(deployment)


SETTING_FIELDS = ("reference_dataset", "value_per_prediction", "value_unit", "retrain_with_feedback",
                  "retrain_feedback_days", "retrain_every_days")


def update_settings(deployment: Deployment, *, actor, **fields) -> MonitoringSettings:
    """Change monitoring settings (validated, audited). A new reference dataset is checked to belong to the project."""
    require(actor, Action.MANAGE_ALERTS, deployment)
    current = settings_for(deployment)
    errors: dict[str, list[str]] = {}
    unknown = set(fields) - set(SETTING_FIELDS)
    if unknown:
        errors["non_field_errors"] = [f"Unknown setting(s): {', '.join(sorted(unknown))}."]
    dataset = fields.get("reference_dataset", current.reference_dataset)
    if "reference_dataset" in fields and dataset is not None:
        if dataset.dataset.project_id != deployment.project_id:
            errors["reference_dataset"] = ["No such dataset version in this project."]
        elif not dataset.parquet_name:
            errors["reference_dataset"] = [f"{dataset} is not profiled yet: wait for its profile, then choose it."]
    value = fields.get("value_per_prediction", current.value_per_prediction)
    if value is not None and (not math.isfinite(float(value)) or float(value) < 0 or float(value) > 1e9):
        errors["value_per_prediction"] = ["A value per prediction is a number from 0 up (leave empty for none)."]
    for name, top in (("retrain_feedback_days", 3650), ("retrain_every_days", 365)):
        if name in fields and not (isinstance(fields[name], int) and 0 <= fields[name] <= top):
            errors[name] = [f"A whole number of days from 0 to {top}."]
    if errors:
        raise ValidationError(errors)
    before = {name: str(getattr(current, name)) for name in SETTING_FIELDS}
    for name, value in fields.items():
        setattr(current, name, value)
    with transaction.atomic():
        current.save()
        changed = {name: str(getattr(current, name)) for name in SETTING_FIELDS if str(getattr(current, name)) !=
                   before[name]}
        if changed:
            audit.record("monitoring.settings_changed", actor=actor, obj=deployment,
                         details={"deployment": deployment.slug, "changed": changed})
    return current
