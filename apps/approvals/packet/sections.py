"""The packet sections the approvals app itself knows: model card, lineage, validation, approvals, audit trail.

Dataset values never appear: the training data is described by its profile's counts only, and validation
findings about columns flagged as personal data are withheld (their messages can quote values).
"""

from __future__ import annotations

import json

from django.db.models import Q
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from apps.accounts.permissions import Action, can
from apps.approvals.models import ApprovalRequest, Decision
from apps.approvals.packet.registry import (
    ORDER_APPROVALS,
    ORDER_AUDIT,
    ORDER_CARD,
    ORDER_LINEAGE,
    ORDER_VALIDATION,
    register_section,
    when,
)
from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.registry import charts
from apps.registry.evidence.facts import training_summary
from apps.registry.models import ModelValidation, ModelVersion

MAX_AUDIT_EVENTS = 2000
MAX_VALIDATIONS = 50

# Audit actions in words, for a reader who does not know the codes (the code is shown too).
ACTION_WORDS = {
    "model.create": "Model registered",
    "model.update": "Model description changed",
    "model.import": "Version imported",
    "model.import_failed": "Import failed",
    "model.version_update": "Version details changed",
    "model.archive": "Version archived",
    "model.restore": "Version restored",
    "model.trust": "Quarantined file trusted by an admin",
    "model.reexamine": "Import examined again",
    "model.try": "Prediction tried on the model card",
    "model.explain_started": "Feature importance requested",
    "model.explained": "Feature importance computed",
    "model.optimise_started": "ONNX check requested",
    "model.optimised": "ONNX check finished",
    "model.onnx_registered": "ONNX conversion registered",
    "model.baselines_started": "Comparison with simple baselines requested",
    "model.baselines_compared": "Compared with simple baselines",
    "model.baselines_failed": "Comparison with simple baselines could not run",
    "model.baseline_registered": "Simple baseline registered as a version",
    "model.validation_started": "Validation against a dataset requested",
    "model.validation_failed": "Validation could not run",
    "model.validated": "Validation finished",
    "approval.request": "Approval requested",
    "approval.decision": "Approver decided",
    "approval.approved": "Request approved (enough approvals)",
    "approval.rejected": "Request rejected",
    "approval.changes_requested": "Changes requested",
    "approval.withdraw": "Request withdrawn",
    "approval.withdrawn": "Request withdrawn",
    "approval.expired": "Request or approval expired",
    "approval.void": "Request void: the model file changed",
    "approval.self_decision_refused": "Refused: someone tried to approve their own work",
    "audit.packet_export": "Audit packet exported",
    "deployment.create": "Deployed",
    "deployment.promote": "New champion deployed",
    "deployment.rollback": "Rolled back to the fallback",
    "deployment.challenger": "Challenger changed",
    "deployment.update": "Deployment settings changed",
    "deployment.stop": "Deployment stopped",
    "deployment.resume": "Deployment resumed",
    "deployment.token_create": "Deployment token created",
    "deployment.token_revoke": "Deployment token revoked",
    "deployment.auto_deploy_refused": "Automatic deployment refused",
    "deployment.package_export": "Container package downloaded",
    "deployment.predictions_export": "Prediction log exported",
    "deployment.batch_started": "Batch scoring started",
}

CHECK_WORDS = {True: "Done", False: "Missing", None: "Not applicable"}


def _people(user) -> str:
    return user.get_username() if user is not None else "—"


# --- Model card --------------------------------------------------------------------------------------------


def card_section(version: ModelVersion, user) -> dict:
    model = version.model
    explainability = version.explainability or {}
    return {
        "model": model,
        "version": version,
        "facts": [
            ("Purpose", version.description or model.description or "Not described."),
            ("Intended use", model.intended_use or "Not recorded."),
            ("Out of scope", model.out_of_scope_uses or "Not recorded."),
            ("Task", model.get_task_type_display()),
            ("Risk tier", model.get_risk_tier_display()),
            ("Owner", _people(model.owner) if model.owner_id else "No owner named."),
            ("Status", version.get_status_display()),
            ("Imported", format_html("{} by {}", when(version.created_at), _people(version.created_by))),
        ],
        "signature_inputs": (version.signature or {}).get("inputs", []),
        "signature_outputs": (version.signature or {}).get("outputs", []),
        "metrics": sorted((version.metrics or {}).items()),
        "params": sorted((version.params or {}).items()),
        "explainability": explainability,
        "importance_svg": mark_safe(charts.importance_svg(explainability)) if explainability else "",  # noqa: S308 - built from escaped parts
    }


# --- Lineage -----------------------------------------------------------------------------------------------


def lineage_section(version: ModelVersion, user) -> dict:
    training = training_summary(version, user)
    if training is not None:
        dataset_version = training["version"]
        # Counts only: never a value, range or category of any column, personal data or not.
        training = {"name": f"{training['dataset'].name} v{dataset_version.number}", "id": str(dataset_version.uuid),
                    "rows": training["rows"], "columns": training["columns"], "warnings": training["warnings"],
                    "pii_columns": len(dataset_version.pii_columns), "target_column": training["target_column"],
                    "sha256": dataset_version.sha256}
    safety = version.safety or {}
    return {
        "training": training,
        "code_repository": version.code_repository,
        "code_commit": version.code_commit,
        "requirements": version.requirements or [],
        "format": version.get_format_display(),
        "flavor": version.flavor,
        "sha256": version.sha256,
        "artifact_sha256": version.artifact_sha256,
        "original_filename": version.original_filename,
        "converted_from": version.converted_from,
        "safety_verdict": safety.get("verdict", ""),
        "safety_summary": safety.get("summary", ""),
        "trusted_by": _people(version.trusted_by) if version.trusted_by_id else "",
        "trusted_at": when(version.trusted_at),
        "trusted_sha256": version.trusted_sha256,
        "created_by": _people(version.created_by),
        "created_at": when(version.created_at),
    }


# --- Validation --------------------------------------------------------------------------------------------


def validation_section(version: ModelVersion, user) -> dict:
    validations = list(version.validations.select_related("dataset_version__dataset", "created_by")
                       .order_by("-created_at")[:MAX_VALIDATIONS])
    used = set(ApprovalRequest.objects.filter(model_version=version, validation__isnull=False)
               .values_list("validation_id", flat=True))
    training_pii = set(version.training_dataset.pii_columns) if version.training_dataset_id else set()
    rows = []
    for v in validations:
        report = v.report or {}
        pii = training_pii | set(v.dataset_version.pii_columns)
        findings = [f for f in report.get("findings") or [] if f.get("column") not in pii]
        withheld = len(report.get("findings") or []) - len(findings)
        summary = report.get("summary", "")
        if withheld:  # the summary quotes a finding ("e.g. …"), which may be one of the withheld ones
            summary = f"{len(report.get('findings') or [])} finding(s); verdict {v.get_verdict_display().lower()}."
        rows.append({"dataset": f"{v.dataset_version.dataset.name} v{v.dataset_version.number}",
                     "verdict": v.verdict, "verdict_display": v.get_verdict_display(), "summary": summary,
                     "findings": [{"severity": f.get("severity", ""), "message": f.get("message", "")}
                                  for f in findings],
                     "withheld": withheld, "by": _people(v.created_by), "at": when(v.created_at),
                     "used_for_approval": v.pk in used})
    return {"validations": rows}


# --- Approvals ---------------------------------------------------------------------------------------------


def _answers(request: ApprovalRequest) -> list[dict]:
    texts = {q["key"]: q["text"] for q in request.environment.questionnaire}
    answers = []
    for key, value in (request.answers or {}).items():
        if isinstance(value, bool):
            value = "Yes" if value else "No"
        answers.append({"question": texts.get(key, key.replace("_", " ").capitalize()), "answer": value})
    return answers


def approvals_section(version: ModelVersion, user) -> dict:
    requests = (ApprovalRequest.objects.filter(model_version=version)
                .select_related("environment", "requested_by", "validation__dataset_version__dataset")
                .prefetch_related("decisions__approver").order_by("created_at"))
    rows = []
    for r in requests:
        environment = r.environment
        roles = environment.deciding_roles()
        policy = [f"{r.required_approvals} approval{'s' if r.required_approvals != 1 else ''} needed",
                  f"decided by members with the {' or '.join(roles)} role"]
        if environment.high_risk_extra_approval:
            policy.append("one more approval for high-risk models")
        if environment.approval_valid_days:
            policy.append(f"an approval is valid for {environment.approval_valid_days} days")
        if environment.reauth_required:
            policy.append("approvers re-enter their password to sign off")
        decisions = [{"approver": _people(d.approver), "verdict": d.verdict, "verdict_display": d.get_verdict_display(),
                      "comment": d.comment, "at": when(d.created_at)} for d in r.decisions.all()]
        approvals = sum(1 for d in decisions if d["verdict"] == Decision.Verdict.APPROVE)
        checklist = [{"label": c.get("label", c.get("key", "")), "state": CHECK_WORDS.get(c.get("ok"), "—"),
                      "ok": c.get("ok"), "detail": c.get("detail", "")}
                     for c in (r.evidence or {}).get("checklist", [])]
        rows.append({
            "id": str(r.uuid), "environment": environment.name, "policy": "; ".join(policy) + ".",
            "requested_by": _people(r.requested_by), "requested_at": when(r.created_at),
            "justification": r.justification, "answers": _answers(r), "checklist": checklist,
            "validation": str(r.validation.dataset_version) if r.validation_id else "",
            "decisions": decisions, "approvals": approvals, "required": r.required_approvals,
            "status": r.status, "status_display": r.get_status_display(), "decided_at": when(r.decided_at),
            "expires_at": when(r.expires_at), "closed_reason": r.closed_reason,
            "current": r.is_current_approval, "artifact_matches": r.artifact_matches(),
        })
    return {"requests": rows}


# --- Audit trail -------------------------------------------------------------------------------------------


def model_events(version: ModelVersion):
    """Events about this model, any of its versions and their validations, approval requests and decisions."""
    model = version.model
    versions = list(model.versions.values_list("pk", "uuid"))
    version_pks = [pk for pk, _ in versions]
    requests = ApprovalRequest.objects.filter(model_version_id__in=version_pks)
    objects = (
        Q(object_type="registry.registeredmodel", object_id=model.slug)
        | Q(object_type="registry.modelversion", object_id__in=[str(u) for _, u in versions])
        | Q(object_type="registry.modelvalidation", object_id__in=[
            str(u) for u in ModelValidation.objects.filter(model_version_id__in=version_pks)
            .values_list("uuid", flat=True)])
        | Q(object_type="approvals.approvalrequest", object_id__in=[str(u) for u in requests.values_list(
            "uuid", flat=True)])
        | Q(object_type="approvals.decision", object_id__in=[str(u) for u in Decision.objects.filter(
            request__in=requests).values_list("uuid", flat=True)])
    )
    return AuditEvent.objects.filter(objects, project=model.project_id)


def chain_verdict(report) -> str:
    if report.ok:
        return f"The audit trail is intact: {report.events} events checked."
    return (f"The audit trail is broken at event #{report.first_bad}: {report.reason}. Events from #{report.first_bad} "
            f"on may have been changed or removed after they were recorded; {report.events} events checked.")


def audit_section(version: ModelVersion, user) -> dict:
    may_read = user.is_staff or can(user, Action.VIEW_AUDIT, version)
    events = model_events(version)
    total = events.count()
    if not may_read:
        # The packet follows the audit page's rule: the trail is for admins, approvers and staff.
        events = events.filter(actor=user)
    shown = list(events.order_by("sequence")[:MAX_AUDIT_EVENTS])
    report = verify_chain() if may_read else None
    rows = [{"sequence": e.sequence, "at": when(e.created_at), "actor": e.actor_label or "system",
             "action": e.action, "words": ACTION_WORDS.get(e.action, ""), "object": e.object_repr,
             "details": json.dumps(e.details, sort_keys=True, ensure_ascii=False)[:500] if e.details else "",
             "after_break": bool(report and not report.ok and e.sequence >= report.first_bad),
             "hash": e.hash} for e in shown]
    return {
        "events": rows, "total": total, "truncated": len(shown) < events.count(), "may_read": may_read,
        "withheld": total - events.count() if not may_read else 0,
        "chain": report.as_dict() if report else None, "verdict": chain_verdict(report) if report else "",
    }


def register_builtin_sections() -> None:
    register_section("card", "Model card", ORDER_CARD, card_section, template="approvals/packet_card.html")
    register_section("lineage", "Lineage: where the model comes from", ORDER_LINEAGE, lineage_section,
                     template="approvals/packet_lineage.html")
    register_section("validation", "Validation against data", ORDER_VALIDATION, validation_section,
                     template="approvals/packet_validation.html")
    from apps.approvals.packet import baselines

    baselines.register()
    register_section("approvals", "Approvals and decisions", ORDER_APPROVALS, approvals_section,
                     template="approvals/packet_approvals.html")
    register_section("audit", "Audit trail", ORDER_AUDIT, audit_section, template="approvals/packet_audit.html")
