"""First-run tours: which role a person is shown, the steps of each role's tour, and remembering dismissals.

A person's tour role is the highest-privilege role they hold in any project (staff count as admins), so
someone who later becomes an approver sees the approver tour once, even after dismissing the scientist's.
"""

from __future__ import annotations

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Membership
from apps.guidance.models import TourProgress

Role = TourProgress.Role
RANK = [Role.VIEWER, Role.SCIENTIST, Role.APPROVER, Role.ADMIN]  # lowest to highest privilege


def tour_role(user, memberships=None) -> str:
    """The role whose tour this person sees; `memberships` saves the query when the page already has them."""
    if user.is_staff:
        return Role.ADMIN
    if memberships is None:
        roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    else:
        roles = {m.role for m in memberships}
    return max((r for r in RANK if r in roles), key=RANK.index, default=Role.VIEWER)


def _project_url(name: str, project, fallback: str = "project-list") -> str:
    return reverse(name, args=[project.slug]) if project is not None else reverse(fallback)


def steps(role: str, project=None) -> list[dict]:
    """The 3–5 steps of a role's tour, each a plain sentence with a link to the real page."""
    home, help_url = reverse("home"), reverse("guidance-help")
    if role == Role.SCIENTIST:
        return [
            {"title": "Bring your data", "url": _project_url("dataset-list", project), "link": "Datasets",
             "text": "Upload the data you trained on: the portal profiles it and flags personal data."},
            {"title": "Import a model", "url": _project_url("model-import", project), "link": "Import a model",
             "text": "The guided wizard takes an MLflow, skops, ONNX or pickle file and records where it came from."},
            {"title": "Make it ready", "url": _project_url("model-list", project), "link": "Models",
             "text": "Each version's card has a readiness checklist: owner, intended use, validation, "
                     "explainability. Fix what is missing, then request approval."},
            {"title": "Deploy and watch", "url": home, "link": "Operations Center",
             "text": "Once approved, deploy it; the Operations Center shows its health, alerts and drift."},
            {"title": "When in doubt", "url": help_url, "link": "Help",
             "text": "The Help page has a checklist for your role and the user guides."},
        ]
    if role == Role.APPROVER:
        return [
            {"title": "Requests waiting for you", "url": reverse("approval-queue"), "link": "Approvals",
             "text": "Data scientists ask you to sign off before a model runs where it matters. They wait here."},
            {"title": "Read the evidence", "url": reverse("approval-queue"), "link": "Approvals",
             "text": "Each request links the model card, its validation, explainability and readiness checklist."},
            {"title": "Decide and explain", "url": reverse("approval-queue"), "link": "Approvals",
             "text": "Approve, reject or ask for changes, with a comment the team and the audit trail keep."},
            {"title": "Keep an eye on it", "url": home, "link": "Operations Center",
             "text": "Approvals can expire: the Operations Center lists those due for re-certification."},
            {"title": "When in doubt", "url": help_url, "link": "Help",
             "text": "The Help page has an approver's checklist in plain language."},
        ]
    if role == Role.ADMIN:
        members = _project_url("project-members", project)
        return [
            {"title": "Who may do what", "url": members, "link": "Members",
             "text": "Add people to projects and give each a role: stakeholder, data scientist, approver, admin."},
            {"title": "Environments and sign-off", "url": _project_url("environment-list", project),
             "link": "Environments", "text": "Decide which environments need approval, from whom, and for how long."},
            {"title": "Watch everything in service", "url": home, "link": "Operations Center",
             "text": "Every deployment's health, open alerts and readiness in one place."},
            {"title": "When in doubt", "url": help_url, "link": "Help",
             "text": "The Help page has the admin checklist and the operations guide."},
        ]
    return [
        {"title": "Models in service", "url": home, "link": "Operations Center",
         "text": "See which models your projects run, whether they are healthy, and how much they are used."},
        {"title": "Read a model card", "url": _project_url("model-list", project), "link": "Models",
         "text": "Each model has a card in plain words: what it is for, what data it learned from, who owns it."},
        {"title": "Try a prediction", "url": _project_url("model-list", project), "link": "Models",
         "text": "On a card, fill in the Try-it form to see what the model answers for a case you know."},
        {"title": "When in doubt", "url": help_url, "link": "Help",
         "text": "The Help page has a stakeholder's checklist and the getting-started guide."},
    ]


def should_show(user, role: str) -> bool:
    """Shown on every page until this person dismisses it for this role (one query, no write on a page view)."""
    return not TourProgress.objects.filter(user=user, role=role, dismissed_at__isnull=False).exists()


# Dismissing or restarting a tour is a personal display preference, not a governed change, so it writes
# no audit event (the audit trail records what happened to projects, models and access).
@transaction.atomic
def dismiss(user, *, role: str | None = None) -> TourProgress:
    role = role or tour_role(user)
    progress, _ = TourProgress.objects.get_or_create(user=user, role=role)
    if progress.dismissed_at is None:
        progress.dismissed_at = timezone.now()
        progress.save(update_fields=["dismissed_at"])
    return progress


@transaction.atomic
def restart(user, *, role: str | None = None) -> TourProgress:
    role = role or tour_role(user)
    progress, _ = TourProgress.objects.get_or_create(user=user, role=role)
    TourProgress.objects.filter(pk=progress.pk).update(dismissed_at=None)
    progress.dismissed_at = None
    return progress
