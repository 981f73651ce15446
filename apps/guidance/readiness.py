"""The readiness checklist of a model version: eight things a version needs before it is safely in service.

Computed for many versions (or deployments) at once in a fixed number of queries, so the Operations
Center's cards cost the same with 3 deployments or 30. Each missing item links to the page that fixes it
when the person may act there, and otherwise says who can. Link texts avoid the words of the pages' own
buttons and links ("Request approval", "Deploy"), so both can be found by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from django.urls import reverse

from apps.accounts.permissions import ROLE_ACTIONS, Action, can
from apps.approvals.models import ApprovalRequest
from apps.deployments.models import Deployment
from apps.monitoring.models import AlertRule
from apps.registry.models import ModelValidation, ModelVersion

KEYS = ("owner", "intended_use", "training_data", "validation", "explainability", "approval", "alert_rules",
        "fallback")
LABELS = {
    "owner": "Owner named",
    "intended_use": "Intended use written",
    "training_data": "Training data linked",
    "validation": "Validation passed",
    "explainability": "Explainability computed",
    "approval": "Approval obtained",
    "alert_rules": "Alert rules set",
    "fallback": "Fallback version defined",
}
_ROLE_WORDS = {"viewer": "stakeholder", "scientist": "data scientist", "approver": "approver", "admin": "admin"}


@dataclass
class Item:
    key: str
    done: bool
    sentence: str
    fix_url: str = ""
    fix_label: str = ""
    who: str = ""  # who may fix it, when this person may not

    @property
    def label(self) -> str:
        return LABELS[self.key]

    def as_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "done": self.done, "sentence": self.sentence,
                "fix_url": self.fix_url or None, "fix_label": self.fix_label or None, "who": self.who or None}


@dataclass
class Checklist:
    version: ModelVersion
    items: list[Item] = field(default_factory=list)

    @property
    def done_count(self) -> int:
        return sum(1 for i in self.items if i.done)

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def missing(self) -> list[Item]:
        return [i for i in self.items if not i.done]

    @property
    def complete(self) -> bool:
        return self.done_count == self.total

    def as_dict(self) -> dict:
        return {"model": self.version.model.slug, "version": self.version.number, "ready": self.done_count,
                "total": self.total, "complete": self.complete, "items": [i.as_dict() for i in self.items]}


def who_may(action: str) -> str:
    """“a data scientist or admin of the project”: the roles the policy gives an action, in words."""
    words = [_ROLE_WORDS[role] for role, actions in ROLE_ACTIONS.items() if action in actions]
    if len(words) > 1:
        return f"a {', '.join(words[:-1])} or {words[-1]} of the project"
    return f"an {words[0]} of the project" if words[0][0] in "aeiou" else f"a {words[0]} of the project"


class _Facts:
    """Everything the checklist reads, loaded once for a batch of versions (five queries whatever the count)."""

    def __init__(self, versions: list[ModelVersion], deployments: list[Deployment] | None):
        ids = [v.pk for v in versions]
        by_id = {v.pk: v for v in versions}
        self.validation: dict[int, str] = {}
        for version_id, verdict in (ModelValidation.objects.filter(model_version_id__in=ids)
                                    .exclude(verdict=ModelValidation.Verdict.PENDING)
                                    .order_by("-created_at", "-id").values_list("model_version_id", "verdict")):
            self.validation.setdefault(version_id, verdict)  # the latest finished validation decides
        self.approved: set[int] = set()
        self.pending: dict[int, ApprovalRequest] = {}
        for request in (ApprovalRequest.objects.filter(model_version_id__in=ids, status__in=[
                ApprovalRequest.Status.APPROVED, ApprovalRequest.Status.PENDING]).select_related("environment")
                        .order_by("-created_at")):
            request.model_version = by_id[request.model_version_id]  # artifact_matches() reads it: no query
            if request.status == ApprovalRequest.Status.PENDING:
                self.pending.setdefault(request.model_version_id, request)
            elif request.is_current_approval:
                self.approved.add(request.model_version_id)
        if deployments is None:  # a card: every deployment whose champion is this version counts
            deployments = list(Deployment.objects.filter(champion_id__in=ids).only(
                "pk", "slug", "champion_id", "fallback_id", "status", "project_id").order_by("status", "name"))
        self.deployments: dict[int, list[Deployment]] = {}
        for deployment in deployments:
            self.deployments.setdefault(deployment.champion_id, []).append(deployment)
        self.with_rules = set(AlertRule.objects.filter(
            deployment_id__in=[d.pk for d in deployments], enabled=True).values_list("deployment_id", flat=True))


def _fix(item: Item, user, project, action: str, url: str, label: str) -> Item:
    if can(user, action, project):
        item.fix_url, item.fix_label = url, label
    else:
        item.who = f"Only {who_may(action)} can do this."
    return item


def _checklist(version: ModelVersion, deployments: list[Deployment], facts: _Facts, user) -> Checklist:
    model, project = version.model, version.model.project
    card = reverse("model-version", args=[model.slug, version.number])
    edit = reverse("model-edit", args=[model.slug]) + "?next=" + quote(card)
    wizard = reverse("model-import", args=[project.slug]) + f"?model={model.slug}"
    items = []

    item = Item("owner", model.owner_id is not None,
                "An owner is named: the person to ask about this model." if model.owner_id else
                "Nobody is named as this model's owner, so nobody answers for it.")
    items.append(item if item.done else _fix(item, user, project, Action.EDIT_MODEL, f"{edit}#id_owner",
                                             "Name an owner"))

    written = bool((model.intended_use or "").strip())
    item = Item("intended_use", written, "Its intended use is written down." if written else
                "Nobody has written down what this model is for, and what it must not be used for.")
    items.append(item if written else _fix(item, user, project, Action.EDIT_MODEL, f"{edit}#id_intended_use",
                                           "Write the intended use"))

    linked = version.training_dataset_id is not None
    item = Item("training_data", linked, "The data it was trained on is linked." if linked else
                "No training dataset is linked, so its data cannot be checked or compared.")
    items.append(item if linked else _fix(item, user, project, Action.IMPORT_MODEL, wizard,
                                          "Import a version with its training data linked"))

    verdict = facts.validation.get(version.pk)
    passed = verdict in (ModelValidation.Verdict.PASS, ModelValidation.Verdict.WARN)
    sentence = {ModelValidation.Verdict.PASS: "Its latest validation passed.",
                ModelValidation.Verdict.WARN: "Its latest validation passed, with warnings worth reading.",
                ModelValidation.Verdict.FAIL: "Its latest validation failed: the data does not fit the model.",
                ModelValidation.Verdict.ERROR: "Its latest validation could not run."}.get(
        verdict, "It has not been validated against a dataset yet.")
    item = Item("validation", passed, sentence)
    items.append(item if passed else _fix(item, user, project, Action.EDIT_MODEL, f"{card}#validations",
                                          "Validate it"))

    explained = bool(version.explainability)
    item = Item("explainability", explained, "Which features matter most has been computed." if explained else
                "Nobody has computed which features matter most to its answers.")
    items.append(item if explained else _fix(item, user, project, Action.EDIT_MODEL, f"{card}#explainability",
                                              "Compute which features matter"))

    approved = version.pk in facts.approved
    pending = facts.pending.get(version.pk)
    if approved:
        item = Item("approval", True, "It has a current approval.")
    elif pending is not None:
        item = Item("approval", False, f"Approval for {pending.environment.name} is asked and waits for decisions.",
                    fix_url=reverse("approval-detail", args=[pending.uuid]), fix_label="See the request")
    else:
        item = _fix(Item("approval", False, "It has no current approval to run where sign-off is needed."),
                    user, project, Action.REQUEST_APPROVAL,
                    reverse("approval-request", args=[model.slug, version.number]), "Ask for sign-off")
    items.append(item)

    deploy_url = reverse("deployment-new") + f"?version={version.uuid}"
    if not deployments:
        for key, words in (("alert_rules", "alert rules"), ("fallback", "a fallback version")):
            items.append(_fix(Item(key, False, f"It is not deployed yet, so it has no {words}."),
                              user, project, Action.DEPLOY, deploy_url, "Put it in service"))
        return Checklist(version, items)

    ruled = [d for d in deployments if d.pk in facts.with_rules]
    target = deployments[0]
    item = Item("alert_rules", bool(ruled), "Alert rules watch its deployment." if ruled else
                "No alert rule watches its deployment, so nobody hears when it goes wrong.")
    items.append(item if ruled else _fix(item, user, project, Action.MANAGE_ALERTS,
                                         reverse("alert-rules", args=[target.slug]), "Choose what to watch"))
    backed = [d for d in deployments if d.fallback_id]
    item = Item("fallback", bool(backed), "Its deployment has a fallback version to roll back to." if backed else
                "Its deployment has no fallback version: if it fails there is nothing to roll back to.")
    items.append(item if backed else _fix(item, user, project, Action.DEPLOY, reverse("deployment-page", args=[
        target.slug]), "Keep a version to roll back to"))
    return Checklist(version, items)


def for_versions(versions: list[ModelVersion], user) -> dict[int, Checklist]:
    """{version id: checklist}; versions should come with `model__project` selected."""
    versions = list(versions)
    if not versions:
        return {}
    facts = _Facts(versions, None)
    return {v.pk: _checklist(v, facts.deployments.get(v.pk, []), facts, user) for v in versions}


def for_version(version: ModelVersion, user) -> Checklist:
    return for_versions([version], user)[version.pk]


def for_deployments(deployments: list[Deployment], user) -> dict[int, Checklist]:
    """{deployment id: checklist of its champion}, alert rules and fallback judged on that deployment itself.

    Deployments should come with `project` and `champion__model` selected (the Operations Center's do)."""
    deployments = list(deployments)
    if not deployments:
        return {}
    for d in deployments:  # the champion's model's project is the deployment's: reuse it, no query
        d.champion.model.project = d.project
    versions = list({d.champion_id: d.champion for d in deployments}.values())
    facts = _Facts(versions, deployments)
    return {d.pk: _checklist(d.champion, [d], facts, user) for d in deployments}
