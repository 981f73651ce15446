"""Every change to deployments: deploy, promote, challengers, rollback, stop/resume, tokens, with their rules.

The rule that matters: nothing serves unless it is approved for the deployment's environment (bound to its
exact artifact), servable (not quarantined or failed) and still matching the digest the approval pinned.
Each change bumps the deployment's `generation` and, once committed, tells this process's serving cache.
"""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require
from apps.approvals.models import ApprovalRequest, Environment
from apps.approvals.services import current_approvals
from apps.audit import services as audit
from apps.deployments.models import Deployment, DeploymentEvent, DeploymentToken
from apps.registry.models import ModelVersion

RESERVED_SLUGS = {"new"}
UPDATABLE_FIELDS = ("description", "challenger_mode", "challenger_share", "max_rows", "rate_limit_per_minute")


class NotDeployable(Exception):
    """The version may not serve in this environment; the message says why (the API answers 409)."""


# --- The rule ------------------------------------------------------------------------------------------------


def refusal(version: ModelVersion, environment: Environment) -> str | None:
    """Why `version` may not serve in `environment`, or None when it may."""
    if version.model.project_id != environment.project_id:
        return f"{environment.name} belongs to another project than {version.model.name}."
    if not version.is_servable:
        return (f"{version.model.name} v{version.number} is {version.get_status_display().lower()}: only a version "
                "imported safely (or a quarantined file a project admin trusted) can serve.")
    if not environment.gated:
        return None
    approvals = [r for r in version.approvals.filter(environment=environment,
                                                     status=ApprovalRequest.Status.APPROVED)]
    if not approvals:
        return (f"{version.model.name} v{version.number} is not approved for {environment.name}: request approval "
                f"first ({environment.required_approvals} approver(s) needed).")
    if not any(r.environment_id == environment.pk for r in current_approvals(version)):
        stale = approvals[0]
        if stale.bound_sha256 != version.sha256 or stale.bound_artifact_sha256 != version.artifact_sha256:
            return (f"The approval of {version.model.name} v{version.number} for {environment.name} was given to a "
                    "file whose SHA-256 no longer matches this version: request approval again.")
        return (f"The approval of {version.model.name} v{version.number} for {environment.name} is no longer valid "
                "(it expired or was voided): request approval again.")
    return None


def _check_deployable(version: ModelVersion, environment: Environment) -> None:
    reason = refusal(version, environment)
    if reason:
        raise NotDeployable(reason)


def _check_serves(version: ModelVersion) -> None:
    """A model that runs its own code must answer a test prediction in a child process first (serving.smoke_refusal),
    so a version that hangs or exhausts memory never replaces one that works."""
    from apps.deployments import serving

    refusal = serving.smoke_refusal(version)
    if refusal:
        raise NotDeployable(refusal)


def _after_commit(deployment: Deployment) -> None:
    from apps.deployments import serving

    slug = deployment.slug
    transaction.on_commit(lambda: serving.forget_route(slug))


def _event(deployment: Deployment, kind: str, *, actor, actor_label: str = "", reason: str = "",
           previous=None, details: dict | None = None) -> DeploymentEvent:
    return DeploymentEvent.objects.create(
        deployment=deployment, kind=kind, champion=deployment.champion, previous_champion=previous,
        challenger=deployment.challenger, actor=actor, actor_label=actor_label, reason=reason,
        details=details or {})


def _audit(action: str, deployment: Deployment, *, actor, actor_label: str = "", **details) -> None:
    audit.record(action, actor=actor, actor_label=actor_label, obj=deployment,
                 details={"deployment": deployment.slug, "environment": deployment.environment.slug,
                          "champion": _label(deployment.champion), **details})


def _label(version: ModelVersion | None) -> str | None:
    return f"{version.model.slug} v{version.number}" if version is not None else None


def _unique_slug(name: str) -> str:
    base = slugify(name)[:100] or "deployment"
    if base in RESERVED_SLUGS:  # /deployments/new/ is the deploy form
        base = f"{base}-deployment"
    slug, n = base, 2
    while Deployment.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


# --- Deploy and promote ----------------------------------------------------------------------------------------


def deploy(project: Project, *, actor, name: str, environment: Environment, version: ModelVersion,
           description: str = "", actor_label: str = "") -> Deployment:
    """A new deployment serving `version` in `environment` (NotDeployable says why not)."""
    if actor is not None:
        require(actor, Action.DEPLOY, project)
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["Give the deployment a name."]
    elif len(name) > 120:
        errors["name"] = ["Keep the name under 120 characters."]
    elif Deployment.objects.filter(project=project, name__iexact=name).exists():
        errors["name"] = [f"The project already has a deployment called “{name}”: deploy the new version to it "
                          "instead, so its history and fallback carry on."]
    if environment.project_id != project.pk:
        errors["environment"] = ["No such environment in this project."]
    if version.model.project_id != project.pk:
        errors["model_version"] = ["No such model version in this project."]
    if errors:
        raise ValidationError(errors)
    _check_deployable(version, environment)
    from apps.deployments import serving

    serving.resolve_artifact(version)
    _check_serves(version)
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                project=project, name=name, slug=_unique_slug(name), description=description.strip(),
                environment=environment, champion=version, created_by=actor)
            _event(deployment, DeploymentEvent.Kind.DEPLOYED, actor=actor, actor_label=actor_label)
            _audit("deployment.create", deployment, actor=actor, actor_label=actor_label)
    except IntegrityError:
        raise ValidationError({"name": [f"The project already has a deployment called “{name}”."]}) from None
    return deployment


def promote(deployment: Deployment, version: ModelVersion, *, actor, reason: str = "",
            actor_label: str = "") -> Deployment:
    """Make `version` the champion; the current champion becomes the fallback."""
    if actor is not None:
        require(actor, Action.DEPLOY, deployment)
    if version.model.project_id != deployment.project_id:
        raise ValidationError({"model_version": ["No such model version in this project."]})
    _check_deployable(version, deployment.environment)
    from apps.deployments import serving

    serving.resolve_artifact(version)
    _check_serves(version)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.champion_id == version.pk:
            raise ValidationError({"model_version": [f"{_label(version)} is already the champion."]})
        previous = deployment.champion
        deployment.fallback, deployment.champion = previous, version
        if deployment.challenger_id == version.pk:  # a challenger that wins stops being a challenger
            deployment.challenger, deployment.challenger_mode, deployment.challenger_share = None, "", 0
        deployment.status = Deployment.Status.ACTIVE
        deployment.generation += 1
        deployment.save()
        _event(deployment, DeploymentEvent.Kind.PROMOTED, actor=actor, actor_label=actor_label, reason=reason,
               previous=previous)
        _audit("deployment.promote", deployment, actor=actor, actor_label=actor_label, previous=_label(previous),
               reason=reason)
        _after_commit(deployment)
    return deployment


def rollback(deployment: Deployment, *, actor, reason: str) -> Deployment:
    """Switch to the fallback at once; the version rolled back from becomes the new fallback."""
    require(actor, Action.DEPLOY, deployment)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["Say why you roll back: it goes into the audit trail."]})
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.fallback is None:
            raise NotDeployable("There is no fallback version to roll back to: this deployment has only ever "
                                "served one version.")
        fallback = deployment.fallback
        # The fallback was approved once; it must still be, or rolling back would serve an unapproved model.
        _check_deployable(fallback, deployment.environment)
        previous = deployment.champion
        deployment.champion, deployment.fallback = fallback, previous
        deployment.status = Deployment.Status.ACTIVE
        deployment.generation += 1
        deployment.save()
        _event(deployment, DeploymentEvent.Kind.ROLLED_BACK, actor=actor, reason=reason, previous=previous)
        _audit("deployment.rollback", deployment, actor=actor, previous=_label(previous), reason=reason)
        _after_commit(deployment)
    return deployment


def set_challenger(deployment: Deployment, version: ModelVersion | None, *, actor, mode: str = "",
                   share: int = 0) -> Deployment:
    """A canary (answers `share` percent of requests) or shadow (scores every request, logged only); None removes."""
    require(actor, Action.DEPLOY, deployment)
    if version is not None:
        if version.model.project_id != deployment.project_id:
            raise ValidationError({"challenger": ["No such model version in this project."]})
        if version.pk == deployment.champion_id:
            raise ValidationError({"challenger": ["The champion cannot also be its own challenger."]})
        if mode not in Deployment.ChallengerMode.values:
            raise ValidationError({"challenger_mode": ["Choose canary or shadow."]})
        share = _percent(share) if mode == Deployment.ChallengerMode.CANARY else 0
        if mode == Deployment.ChallengerMode.CANARY and not share:
            raise ValidationError({"challenger_share": ["A canary needs a share of traffic between 1 and 100%."]})
        _check_deployable(version, deployment.environment)
        from apps.deployments import serving

        serving.resolve_artifact(version)
        _check_serves(version)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        had = deployment.challenger
        deployment.challenger = version
        deployment.challenger_mode = mode if version is not None else ""
        deployment.challenger_share = share if version is not None else 0
        deployment.generation += 1
        deployment.save()
        kind = DeploymentEvent.Kind.CHALLENGER if version is not None else DeploymentEvent.Kind.CHALLENGER_REMOVED
        details = {"mode": deployment.challenger_mode, "share": deployment.challenger_share}
        _event(deployment, kind, actor=actor, details=details)
        _audit("deployment.challenger", deployment, actor=actor, challenger=_label(version), was=_label(had),
               **details)
        _after_commit(deployment)
    return deployment


def _percent(value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError({"challenger_share": ["Give a whole percentage between 0 and 100."]}) from None
    if not 0 <= number <= 100:
        raise ValidationError({"challenger_share": ["Give a whole percentage between 0 and 100."]})
    return number


def update(deployment: Deployment, *, actor, **fields) -> Deployment:
    """Settings: description, limits, and the challenger's mode and share (the challenger itself: set_challenger)."""
    require(actor, Action.DEPLOY, deployment)
    unknown = sorted(set(fields) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ValidationError({name: ["This field cannot be changed here."] for name in unknown})
    errors: dict[str, list[str]] = {}
    cleaned: dict = {}
    for name in ("max_rows", "rate_limit_per_minute"):
        if name in fields:
            try:
                cleaned[name] = int(fields[name])
                if cleaned[name] < 0:
                    raise ValueError
            except (TypeError, ValueError):
                errors[name] = ["Give a whole number, 0 or more (0: the site default)."]
    if "max_rows" in cleaned:
        from django.conf import settings

        if cleaned["max_rows"] > settings.PORTAL_SERVING_MAX_ROWS:
            errors["max_rows"] = [f"The site allows at most {settings.PORTAL_SERVING_MAX_ROWS:,} rows per request."]
    if "description" in fields:
        cleaned["description"] = str(fields["description"] or "").strip()
    if "challenger_share" in fields or "challenger_mode" in fields:
        mode = fields.get("challenger_mode", deployment.challenger_mode)
        if deployment.challenger_id is None:
            errors["challenger"] = ["Set a challenger version first."]
        elif mode not in Deployment.ChallengerMode.values:
            errors["challenger_mode"] = ["Choose canary or shadow."]
        else:
            try:
                share = _percent(fields.get("challenger_share", deployment.challenger_share))
            except ValidationError as exc:
                errors.update(exc.message_dict)
            else:
                if mode == Deployment.ChallengerMode.CANARY and not share:
                    errors["challenger_share"] = ["A canary needs a share of traffic between 1 and 100%."]
                cleaned["challenger_mode"] = mode
                cleaned["challenger_share"] = share if mode == Deployment.ChallengerMode.CANARY else 0
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        changed = {k: v for k, v in cleaned.items() if getattr(deployment, k) != v}
        if not changed:
            return deployment
        for name, value in changed.items():
            setattr(deployment, name, value)
        deployment.generation += 1
        deployment.save()
        _event(deployment, DeploymentEvent.Kind.SETTINGS, actor=actor, details=changed)
        _audit("deployment.update", deployment, actor=actor, changed=changed)
        _after_commit(deployment)
    return deployment


def set_status(deployment: Deployment, *, actor, active: bool, reason: str = "") -> Deployment:
    """Stop (the endpoint answers 503) or resume a deployment; resuming re-checks the champion's approval."""
    require(actor, Action.DEPLOY, deployment)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        status = Deployment.Status.ACTIVE if active else Deployment.Status.STOPPED
        if deployment.status == status:
            return deployment
        if active:
            _check_deployable(deployment.champion, deployment.environment)
        deployment.status = status
        deployment.generation += 1
        deployment.save()
        kind = DeploymentEvent.Kind.RESUMED if active else DeploymentEvent.Kind.STOPPED
        _event(deployment, kind, actor=actor, reason=reason.strip())
        _audit("deployment.resume" if active else "deployment.stop", deployment, actor=actor, reason=reason.strip())
        _after_commit(deployment)
    return deployment


# --- Auto-deploy after approval ------------------------------------------------------------------------------


def deploy_approved(request: ApprovalRequest) -> Deployment | None:
    """An environment with auto-deploy: the final approval makes the version champion of the model's deployment in
    that environment, or deploys it anew. Refusals are recorded, never raised (the approval itself stands)."""
    environment, version = request.environment, request.model_version
    if not environment.auto_deploy:
        return None
    label = "auto-deploy after approval"
    existing = (Deployment.objects.filter(environment=environment, champion__model=version.model)
                .order_by("created_at").first())
    try:
        if existing is not None:
            if existing.champion_id == version.pk:
                return existing
            return promote(existing, version, actor=None, actor_label=label,
                           reason=f"Approval request {request.uuid} was granted.")
        name = f"{version.model.name} ({environment.name})"
        return deploy(version.model.project, actor=None, actor_label=label, name=name, environment=environment,
                      version=version, description=f"Deployed automatically when approval {request.uuid} was granted.")
    except (NotDeployable, ValidationError) as exc:
        with transaction.atomic():
            audit.record("deployment.auto_deploy_refused", actor=None, actor_label=label, obj=version,
                         details={"environment": environment.slug, "reason": str(exc)[:500]})
        return None


# --- Tokens --------------------------------------------------------------------------------------------------


def create_token(deployment: Deployment, *, actor, name: str, expires_at=None) -> tuple[DeploymentToken, str]:
    """A key that may only call this deployment; the key is returned once and stored hashed."""
    require(actor, Action.DEPLOY, deployment)
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Name the token after the application that will use it."]})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["Choose a time in the future."]})
    key = DeploymentToken.KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = DeploymentToken.objects.create(
            deployment=deployment, name=name[:100], key_hash=DeploymentToken.hash(key), key_hint=key[:10],
            created_by=actor, expires_at=expires_at)
        _audit("deployment.token_create", deployment, actor=actor, token=token.name)
    return token, key


def revoke_token(token: DeploymentToken, *, actor) -> DeploymentToken:
    require(actor, Action.DEPLOY, token.deployment)
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            _audit("deployment.token_revoke", token.deployment, actor=actor, token=token.name)
    return token


# --- Reading -------------------------------------------------------------------------------------------------


def may_deploy(user, project: Project) -> bool:
    return can(user, Action.DEPLOY, project)


def history(deployment: Deployment) -> list[dict]:
    """Which version was live when, newest first: one row per change of champion, with who and why."""
    events = list(deployment.events.filter(kind__in=[DeploymentEvent.Kind.DEPLOYED, DeploymentEvent.Kind.PROMOTED,
                                                     DeploymentEvent.Kind.ROLLED_BACK])
                  .select_related("champion__model", "actor").order_by("created_at", "id"))
    rows = []
    for index, event in enumerate(events):
        until = events[index + 1].created_at if index + 1 < len(events) else None
        rows.append({"version": event.champion, "kind": event.kind, "kind_label": event.get_kind_display(),
                     "since": event.created_at, "until": until, "live": until is None,
                     "by": event.actor.username if event.actor else (event.actor_label or "system"),
                     "reason": event.reason})
    return list(reversed(rows))


def deployments_of_version(version: ModelVersion) -> list[dict]:
    """Where `version` serves or served: for the model card, the packet and the comparison."""
    events = (DeploymentEvent.objects.filter(champion=version)
              .select_related("deployment__environment").order_by("created_at"))
    seen: dict[int, dict] = {}
    for event in events:
        deployment = event.deployment
        entry = seen.setdefault(deployment.pk, {"deployment": deployment, "environment": deployment.environment,
                                                "first_live": event.created_at})
        entry["role"] = ("champion" if deployment.champion_id == version.pk else
                         "challenger" if deployment.challenger_id == version.pk else
                         "fallback" if deployment.fallback_id == version.pk else "retired")
    for deployment in Deployment.objects.filter(challenger=version).select_related("environment"):
        seen.setdefault(deployment.pk, {"deployment": deployment, "environment": deployment.environment,
                                        "first_live": None, "role": "challenger"})
    return list(seen.values())


def deployed_in(version: ModelVersion) -> list[dict]:
    """Compact form of deployments_of_version for the registry's comparison."""
    return [{"deployment": row["deployment"].slug, "environment": row["environment"].slug, "role": row["role"]}
            for row in deployments_of_version(version) if row["role"] != "retired"]
