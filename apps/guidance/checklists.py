"""The Help page's checklists, one per role, in plain language (each step links the page where it is done)."""

from __future__ import annotations

from django.urls import reverse

from apps.guidance.tour import RANK, Role

TITLES = {Role.SCIENTIST: "Data scientists", Role.APPROVER: "Approvers", Role.VIEWER: "Stakeholders",
          Role.ADMIN: "Admins"}
INTROS = {
    Role.SCIENTIST: "You bring models in, make them ready and keep them healthy in service.",
    Role.APPROVER: "You decide whether a model may run where it affects people, and you can say no.",
    Role.VIEWER: "You rely on the models: you can read what they do, try them and see how they are doing.",
    Role.ADMIN: "You decide who may do what, and which environments need sign-off.",
}


def _steps(role: str) -> list[tuple[str, str, str]]:
    """(sentence, link text, url) per step; url may be empty."""
    projects, home, queue = reverse("project-list"), reverse("home"), reverse("approval-queue")
    if role == Role.SCIENTIST:
        return [
            ("Upload the data the model was trained on; read its profile and the personal-data warnings.",
             "Your projects", projects),
            ("Import the model with the wizard. Name an owner and write what it is for, and what it must not be "
             "used for.", "Your projects", projects),
            ("On the version's card, go down the readiness checklist: validate it against fresh data and compute "
             "which features matter.", "", ""),
            ("Request approval for the environment it should run in, with a justification an approver can "
             "check.", "Approvals", queue),
            ("Once approved, deploy it; set alert rules and keep the previous version as fallback.",
             "Deployments", reverse("deployment-list")),
            ("Watch the Operations Center. When an alert opens, read what it says and retrain if needed.",
             "Operations Center", home),
        ]
    if role == Role.APPROVER:
        return [
            ("Open the requests waiting for you.", "Approvals", queue),
            ("Read the model card: what it is for, who owns it, the data it learned from.", "", ""),
            ("Check the readiness checklist and the validation: did it pass on data like the real data?", "", ""),
            ("Look at which features matter most. Would you accept those reasons if they were about you?", "", ""),
            ("Decide: approve, ask for changes, or reject. Say why in the comment; it stays in the audit trail.",
             "Approvals", queue),
            ("Re-certify approvals before they expire; the Operations Center lists those due soon.",
             "Operations Center", home),
        ]
    if role == Role.ADMIN:
        return [
            ("Add each person to the projects they work on, with the smallest role that lets them work.",
             "Your projects", projects),
            ("Set up environments: which need approval, how many approvers, how long an approval lasts.",
             "Your projects", projects),
            ("Trust a quarantined model file only after someone other than its uploader checked it.", "", ""),
            ("Read the audit trail now and then, and verify it has not been tampered with.", "Audit",
             reverse("audit-log")),
        ]
    return [
        ("See which models your projects run and whether they are healthy.", "Operations Center", home),
        ("Read a model's card before you rely on it: what it is for, and what it must not be used for.",
         "Your projects", projects),
        ("Try a prediction on a case you know well, and tell the team if the answer surprises you.", "", ""),
        ("See what the models are worth to your organisation.", "Impact", reverse("operations-impact")),
    ]


def for_role(role: str) -> list[dict]:
    """Every role's checklist, the given role first (then from most to least used)."""
    order = [role, *[r for r in (Role.SCIENTIST, Role.APPROVER, Role.VIEWER, Role.ADMIN) if r != role]]
    return [{"role": r, "title": TITLES[r], "intro": INTROS[r], "mine": r == role,
             "steps": [{"text": t, "link": label, "url": url} for t, label, url in _steps(r)]}
            for r in order if r in RANK]
