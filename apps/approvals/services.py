"""Every change to approvals: environments and policies, requests with their evidence, decisions, expiry.

The rules live here, not in the UI: separation of duties, one decision per approver, the policy's quorum,
a rejection ends the request, two racing final approvals cannot both finalise (the request row is locked),
withdrawn/expired/void requests cannot be decided, and an approval is bound to the exact artifact.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.models import Membership, Project
from apps.accounts.permissions import Action, can, require, role_in
from apps.approvals import notifications
from apps.approvals.models import ApprovalRequest, Decision, Environment, signature_digest
from apps.approvals.signals import approval_granted
from apps.audit import services as audit
from apps.registry.models import ModelValidation, ModelVersion

ENVIRONMENT_FIELDS = ("description", "required_approvals", "approver_roles", "high_risk_extra_approval",
                      "approval_valid_days", "request_expiry_days", "reauth_required", "auto_deploy", "questions")


# --- Environments -----------------------------------------------------------------------------------------


def clean_environment_fields(fields: dict) -> dict:
    unknown = set(fields) - set(ENVIRONMENT_FIELDS)
    if unknown:
        raise ValidationError({name: ["This field cannot be set here."] for name in sorted(unknown)})
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    if "description" in fields:
        cleaned["description"] = str(fields["description"] or "").strip()[:2000]
    for key, low, high in (("required_approvals", 0, 10), ("approval_valid_days", 1, 3650),
                           ("request_expiry_days", 1, 365)):
        if key not in fields:
            continue
        value = fields[key]
        if value in (None, "") and key == "approval_valid_days":
            cleaned[key] = None
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            errors[key] = [f"Give a whole number from {low} to {high}."]
            continue
        if not low <= number <= high or isinstance(value, bool):
            errors[key] = [f"Give a whole number from {low} to {high}."]
        else:
            cleaned[key] = number
    if "approver_roles" in fields:
        roles = fields["approver_roles"]
        allowed = {Membership.Role.APPROVER, Membership.Role.ADMIN}
        if not isinstance(roles, list) or not roles or not set(roles) <= allowed:
            errors["approver_roles"] = ["Choose who may decide: approver, admin, or both."]
        else:
            cleaned["approver_roles"] = sorted(set(roles))
    for key in ("high_risk_extra_approval", "reauth_required", "auto_deploy"):
        if key in fields:
            if not isinstance(fields[key], bool):
                errors[key] = ["Give true or false."]
            else:
                cleaned[key] = fields[key]
    if "questions" in fields:
        cleaned["questions"] = _clean_questions(fields["questions"], errors)
    if errors:
        raise ValidationError(errors)
    return cleaned


def _clean_questions(questions, errors: dict) -> list[dict]:
    if questions in (None, []):
        return []
    if not isinstance(questions, list) or len(questions) > 30:
        errors["questions"] = ["Give a list of at most 30 questions."]
        return []
    cleaned, keys = [], set()
    for i, q in enumerate(questions, start=1):
        if not isinstance(q, dict) or not str(q.get("text", "")).strip() or q.get("kind", "text") not in (
                "text", "yes_no"):
            errors["questions"] = [f"Question {i} needs a text and a kind (text or yes_no)."]
            return []
        key = slugify(str(q.get("key") or q["text"]))[:40].replace("-", "_") or f"q{i}"
        if key in keys:
            key = f"{key}_{i}"
        keys.add(key)
        cleaned.append({"key": key, "text": str(q["text"]).strip()[:300], "kind": q.get("kind", "text"),
                        "required": bool(q.get("required", True))})
    return cleaned


def create_environment(project: Project, *, actor, name: str, **fields) -> Environment:
    require(actor, Action.MANAGE_ENVIRONMENTS, project)
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise ValidationError({"name": ["Give the environment a name of at most 80 characters, e.g. production."]})
    cleaned = clean_environment_fields(fields)
    cleaned.setdefault("approver_roles", [Membership.Role.APPROVER, Membership.Role.ADMIN])
    try:
        with transaction.atomic():
            environment = Environment.objects.create(project=project, name=name, slug=slugify(name)[:80] or "env",
                                                     **cleaned)
            audit.record("environment.create", actor=actor, obj=environment, project=project,
                         details={"name": name, **_policy(environment)})
    except IntegrityError:
        raise ValidationError({"name": [f"{project.name} already has an environment called “{name}”."]}) from None
    return environment


def update_environment(environment: Environment, *, actor, **fields) -> Environment:
    require(actor, Action.MANAGE_ENVIRONMENTS, environment)
    cleaned = clean_environment_fields(fields)
    changed = {k: v for k, v in cleaned.items() if getattr(environment, k) != v}
    if changed:
        with transaction.atomic():
            before = _policy(environment)
            for key, value in changed.items():
                setattr(environment, key, value)
            environment.save(update_fields=list(changed))
            audit.record("environment.update", actor=actor, obj=environment,
                         details={"before": before, "after": _policy(environment)})
    return environment


def _policy(environment: Environment) -> dict:
    return {k: getattr(environment, k) for k in ENVIRONMENT_FIELDS if k not in ("description", "questions")}


# --- Requests --------------------------------------------------------------------------------------------------


def evidence_packet(version: ModelVersion, environment: Environment, validation: ModelValidation | None) -> dict:
    """What approvers read, assembled from what is recorded; every missing piece is a checklist item."""
    model = version.model
    training = version.training_dataset
    baselines = version.baselines or {}
    checklist = [
        ("model_card", "Purpose and intended use written", bool(model.intended_use.strip()),
         "" if model.intended_use.strip() else "Write the intended use on the model."),
        ("owner", "An owner is named", model.owner_id is not None, "" if model.owner_id else "Name an owner."),
        ("training_data", "Training data linked", training is not None,
         str(training) if training else "Link the dataset version it was trained on."),
        ("code", "Code repository and commit", bool(version.code_repository and version.code_commit),
         f"{version.code_repository} @ {version.code_commit}" if version.code_commit else "Record the commit."),
        ("metrics", "Metrics recorded", bool(version.metrics), ", ".join(sorted(version.metrics))[:300]),
        ("validation", "Validated against a dataset",
         validation is not None and validation.verdict in (ModelValidation.Verdict.PASS, ModelValidation.Verdict.WARN),
         f"{validation.dataset_version}: {validation.get_verdict_display()}" if validation else
         "Run a validation on the model card and choose it here."),
        ("explainability", "Feature importance computed", bool(version.explainability),
         "" if version.explainability else "Compute feature importance on the model card."),
        ("baselines", "Compared with simple baselines", bool(baselines),
         baselines.get("sentence", "") if baselines else "Compare with simple baselines on the model card."),
        ("champion", "Compared with the model running there", None,
         f"No model runs in {environment.name} yet: nothing to compare with."),
    ]
    return {
        "model": {"name": model.name, "slug": model.slug, "version": version.number, "task_type": model.task_type,
                  "risk_tier": model.risk_tier, "description": model.description,
                  "intended_use": model.intended_use, "out_of_scope_uses": model.out_of_scope_uses,
                  "owner": model.owner.username if model.owner_id else None},
        "lineage": {"training_dataset": str(training) if training else None,
                    "target_column": (version.tags or {}).get("target_column", ""),
                    "code_repository": version.code_repository, "code_commit": version.code_commit,
                    "requirements": version.requirements, "format": version.format, "flavor": version.flavor,
                    "sha256": version.sha256, "artifact_sha256": version.artifact_sha256},
        "metrics": version.metrics,
        "params": version.params,
        "signature": version.signature,
        "validation": {"id": str(validation.uuid), "dataset_version": str(validation.dataset_version),
                       "verdict": validation.verdict, "summary": (validation.report or {}).get("summary", "")}
        if validation else None,
        "explainability": version.explainability,
        # "Is a simpler model enough?" as it stood when approval was asked (the card may be recomputed later).
        "baselines": {"sentence": baselines.get("sentence", ""),
                      "verdict": (baselines.get("lift") or {}).get("verdict"),
                      "columns": baselines.get("columns", []),
                      "models": [{"label": m["label"], "values": m.get("values", [])}
                                 for m in baselines.get("models", [])],
                      "test_rows": baselines.get("test_rows")} if baselines.get("sentence") else None,
        "safety": {"verdict": version.safety.get("verdict", ""), "summary": version.safety.get("summary", ""),
                   "trusted_by": version.trusted_by.username if version.trusted_by_id else None},
        "checklist": [{"key": k, "label": label, "ok": ok, "detail": detail} for k, label, ok, detail in checklist],
    }


def request_approval(version: ModelVersion, environment: Environment, *, actor, justification: str,
                     answers: dict | None = None, validation: ModelValidation | None = None) -> ApprovalRequest:
    require(actor, Action.REQUEST_APPROVAL, version)
    if environment.project_id != version.model.project_id:
        raise ValidationError({"environment": ["This environment belongs to another project."]})
    if not environment.gated:
        raise ValidationError({"environment": [f"{environment.name} needs no approval: deploy there directly."]})
    if not version.is_servable:
        state = version.get_status_display().lower()
        raise ValidationError({"model_version": [
            f"{version} is {state}; only a ready (or trusted) version can be approved."]})
    justification = (justification or "").strip()
    if not justification:
        raise ValidationError({"justification": ["Say why this version should run in " + environment.name + "."]})
    if validation is not None and validation.model_version_id != version.pk:
        raise ValidationError({"validation": ["This validation is of another model version."]})
    cleaned_answers = _clean_answers(environment, answers or {})
    now = timezone.now()
    try:
        with transaction.atomic():
            request = ApprovalRequest.objects.create(
                environment=environment, model_version=version, requested_by=actor,
                justification=justification[:10_000], answers=cleaned_answers,
                evidence=evidence_packet(version, environment, validation), validation=validation,
                required_approvals=environment.approvals_needed(version.model.risk_tier),
                bound_sha256=version.sha256, bound_artifact_sha256=version.artifact_sha256,
                bound_signature_sha256=signature_digest(version.signature),
                expires_at=now + dt.timedelta(days=environment.request_expiry_days),
            )
            audit.record("approval.request", actor=actor, obj=request, project=environment.project,
                         details={"version": str(version), "environment": environment.slug,
                                  "required_approvals": request.required_approvals,
                                  "sha256": version.sha256, "artifact_sha256": version.artifact_sha256})
            notifications.request_opened(request)
    except IntegrityError:
        raise ValidationError({"model_version": [
            f"{version} already has a request waiting for {environment.name}; withdraw it or wait for it."]}) from None
    return request


def _clean_answers(environment: Environment, answers: dict) -> dict:
    if not isinstance(answers, dict):
        raise ValidationError({"answers": ["Give the answers as an object keyed by question."]})
    errors, cleaned = {}, {}
    for question in environment.questionnaire:
        value = answers.get(question["key"])
        if question["kind"] == "yes_no":
            if isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
                value = value.lower() in ("yes", "true")
            if value is None and not question["required"]:
                continue
            if not isinstance(value, bool):
                errors[f"answers.{question['key']}"] = [f"Answer yes or no: {question['text']}"]
                continue
        else:
            value = str(value or "").strip()[:5000]
            if not value and question["required"]:
                errors[f"answers.{question['key']}"] = [f"Answer: {question['text']}"]
                continue
        cleaned[question["key"]] = value
    if errors:
        raise ValidationError(errors)
    return cleaned


def withdraw(request: ApprovalRequest, *, actor, reason: str = "") -> ApprovalRequest:
    require(actor, Action.VIEW_PROJECT, request)
    if actor.pk != request.requested_by_id and not can(actor, Action.MANAGE_ENVIRONMENTS, request):
        raise PermissionDenied("Only the requester or a project admin can withdraw a request.")
    with transaction.atomic():
        if not ApprovalRequest.objects.filter(pk=request.pk, status=ApprovalRequest.Status.PENDING).update(
                status=ApprovalRequest.Status.WITHDRAWN, decided_at=timezone.now(), closed_reason=reason[:1000]):
            raise ValidationError({"status": ["Only a request that is waiting can be withdrawn."]})
        audit.record("approval.withdraw", actor=actor, obj=request, details={"reason": reason[:1000]})
    request.refresh_from_db()
    return request


# --- Decisions -------------------------------------------------------------------------------------------------


def may_decide(user, request: ApprovalRequest) -> tuple[bool, str]:
    """Whether `user` may decide on `request` now, and if not, why (for the UI; decide() enforces it)."""
    if not can(user, Action.DECIDE_APPROVAL, request):
        return False, "Your role in this project cannot decide on approvals."
    if role_in(user, request.project) not in request.environment.deciding_roles():
        roles = " or ".join(request.environment.deciding_roles())
        return False, f"In {request.environment.name}, only members with the {roles} role decide."
    if user.pk in (request.requested_by_id, request.model_version.created_by_id):
        return False, "You requested this approval or imported this version: someone else must decide."
    if request.status != ApprovalRequest.Status.PENDING:
        return False, f"This request is {request.get_status_display().lower()}."
    if request.decisions.filter(approver=user).exists():
        return False, "You have already decided on this request."
    return True, ""


def waiting_for(user) -> list[ApprovalRequest]:
    """Pending requests `user` may decide now, in two queries, or one for someone whose roles decide nowhere
    (the header badge asks on every page).

    The same rules as may_decide: a deciding role the environment allows, not the requester, not the
    version's creator, not decided yet.
    """
    from apps.accounts.permissions import ROLE_ACTIONS, projects_with_action, roles_of

    if not user.is_authenticated:
        return []
    if not user.is_staff and not any(Action.DECIDE_APPROVAL in ROLE_ACTIONS.get(role, ())
                                     for role in roles_of(user).values()):
        return []  # most people on most pages: no role that decides anywhere, so no query
    candidates = (
        ApprovalRequest.objects.select_related("environment__project", "model_version__model",
                                               "model_version__created_by", "requested_by")
        .filter(status=ApprovalRequest.Status.PENDING,
                environment__project__in=projects_with_action(user, Action.DECIDE_APPROVAL))
        .exclude(requested_by=user).exclude(model_version__created_by=user).exclude(decisions__approver=user)
    )
    return [r for r in candidates if role_in(user, r.environment.project) in r.environment.deciding_roles()]


def decide(request: ApprovalRequest, *, actor, verdict: str, comment: str = "", password: str | None = None
           ) -> Decision:
    require(actor, Action.VIEW_PROJECT, request)
    allowed, why = may_decide(actor, request)
    if not allowed and request.status == ApprovalRequest.Status.PENDING and not request.decisions.filter(
            approver=actor).exists():
        if actor.pk in (request.requested_by_id, request.model_version.created_by_id):
            with transaction.atomic():  # kept even though the caller gets an error
                audit.record("approval.self_decision_refused", actor=actor, obj=request,
                             details={"verdict": verdict})
        raise PermissionDenied(why)
    if verdict not in Decision.Verdict.values:
        raise ValidationError({"verdict": ["Choose approve, reject or request_changes."]})
    comment = (comment or "").strip()
    if verdict != Decision.Verdict.APPROVE and not comment:
        raise ValidationError({"comment": ["Say why: a comment is required to reject or request changes."]})
    if request.environment.reauth_required and not (password and actor.check_password(password)):
        raise ValidationError({"password": ["Enter your password again to sign off in this environment."]})
    now = timezone.now()
    closed = None
    with transaction.atomic():
        locked = ApprovalRequest.objects.select_for_update().select_related(
            "model_version", "environment").get(pk=request.pk)
        if locked.status == ApprovalRequest.Status.PENDING and locked.expires_at and locked.expires_at <= now:
            _close(locked, ApprovalRequest.Status.EXPIRED, "Nobody decided before it expired.")
            closed = "expired"
        elif locked.status == ApprovalRequest.Status.PENDING and not locked.artifact_matches():
            _close(locked, ApprovalRequest.Status.VOID, "The model version's file or signature changed.")
            closed = "void"
        if closed is None:
            if locked.status != ApprovalRequest.Status.PENDING:
                raise ValidationError({"status": [
                    f"This request is {locked.get_status_display().lower()}; it can no longer be decided."]})
            if locked.decisions.filter(approver=actor).exists():
                raise ValidationError({"verdict": ["You have already decided on this request."]})
            decision = Decision.objects.create(request=locked, approver=actor, verdict=verdict, comment=comment)
            audit.record("approval.decision", actor=actor, obj=locked,
                         details={"verdict": verdict, "comment": comment[:2000]})
            approvals = locked.decisions.filter(verdict=Decision.Verdict.APPROVE).count()
            if verdict == Decision.Verdict.REJECT:
                _close(locked, ApprovalRequest.Status.REJECTED, comment)
            elif verdict == Decision.Verdict.REQUEST_CHANGES:
                _close(locked, ApprovalRequest.Status.CHANGES_REQUESTED, comment)
            elif approvals >= locked.required_approvals:
                valid = locked.environment.approval_valid_days
                _close(locked, ApprovalRequest.Status.APPROVED, "",
                       expires_at=now + dt.timedelta(days=valid) if valid else None)
                transaction.on_commit(lambda: approval_granted.send(sender=ApprovalRequest, request=locked))
    if closed == "expired":
        raise ValidationError({"status": ["This request expired before it was decided; ask for a new one."]})
    if closed == "void":
        raise ValidationError({"status": ["The model version changed after the request was made, so the request "
                                          "is void. Ask for approval of the version as it is now."]})
    request.refresh_from_db()
    notifications.decision_made(decision)
    return decision


def _close(request: ApprovalRequest, status: str, reason: str, *, expires_at=None) -> None:
    """End a pending request (the caller holds its row lock); audited."""
    fields = {"status": status, "decided_at": timezone.now(), "closed_reason": reason[:2000]}
    if status == ApprovalRequest.Status.APPROVED:
        fields["expires_at"] = expires_at
    updated = ApprovalRequest.objects.filter(pk=request.pk, status=ApprovalRequest.Status.PENDING).update(**fields)
    if updated:
        for key, value in fields.items():
            setattr(request, key, value)
        audit.record(f"approval.{status}", actor=None, actor_label="approval policy", obj=request,
                     details={"reason": reason[:500]})
        notifications.request_closed(request)


def expire_due(now=None) -> int:
    """Beat: close pending requests past their deadline and approvals past their validity. Returns the count."""
    now = now or timezone.now()
    count = 0
    due = ApprovalRequest.objects.filter(status__in=[ApprovalRequest.Status.PENDING, ApprovalRequest.Status.APPROVED],
                                         expires_at__lte=now)
    for request in due:
        with transaction.atomic():
            was = request.status
            if ApprovalRequest.objects.filter(pk=request.pk, status=was).update(
                    status=ApprovalRequest.Status.EXPIRED, closed_reason=(
                        "Nobody decided before it expired." if was == ApprovalRequest.Status.PENDING
                        else "The approval reached the end of its validity: ask for re-approval.")):
                audit.record("approval.expired", actor=None, actor_label="approval policy", obj=request,
                             details={"was": was})
                request.status = ApprovalRequest.Status.EXPIRED
                notifications.request_closed(request)
                count += 1
    return count


def current_approvals(version: ModelVersion) -> list[ApprovalRequest]:
    """The environments this version is approved for right now (bound to its exact artifact)."""
    requests = version.approvals.filter(status=ApprovalRequest.Status.APPROVED).select_related("environment")
    return [r for r in requests if r.is_current_approval]


def is_approved_for(version: ModelVersion, environment: Environment) -> bool:
    if not environment.gated:
        return True
    return any(r.environment_id == environment.pk for r in current_approvals(version))


def record_packet_export(version: ModelVersion, *, actor, sections: list[str], via: str = "") -> None:
    """Audit an audit-packet export (after the document is built: the chain is not held locked meanwhile)."""
    with transaction.atomic():
        audit.record("audit.packet_export", actor=actor, obj=version,
                     details={"version": version.number, "model": version.model.slug, "format": "html",
                              "sections": sections, **({"via": via} if via else {})})
