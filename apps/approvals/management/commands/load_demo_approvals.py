"""Add the demo project's environments: staging (1 approval) and production (2 approvers, high risk +1,
approvals valid 90 days), and, when the demo model exists, its approval story: approved for staging by
approver1, and a production request waiting for the approvers. Idempotent; run `load_demo` (and
`load_demo_models`) first."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Project, User
from apps.approvals import services
from apps.approvals.models import ApprovalRequest, Environment
from apps.registry.models import ModelVersion

ANSWERS = {
    "intended_use": "Order the retention team's calls: customers most likely to leave are called first.",
    "affected_people": "Customers. A high score means an earlier call, never a different price or service.",
    "fairness_checked": True,
    "fallback_plan": "If the model is off, the team calls customers in the order of their contract end date.",
}

DEMO_ENVIRONMENTS = [
    ("staging", {"description": "Try the model on real traffic before production.", "required_approvals": 1}),
    ("production", {"description": "Decisions that reach people. Two approvers sign off.",
                    "required_approvals": 2, "approver_roles": ["approver"], "high_risk_extra_approval": True,
                    "approval_valid_days": 90}),
]


class Command(BaseCommand):
    help = "Create the demo project's staging and production environments with their approval policies."

    def handle(self, *args, **options):
        project = Project.objects.filter(slug="demo").first()
        admin = User.objects.filter(username="admin").first()
        if project is None or admin is None:
            raise CommandError("Run `manage.py load_demo` first: it creates the demo project and users.")
        for name, policy in DEMO_ENVIRONMENTS:
            if Environment.objects.filter(project=project, slug=name).exists():
                continue
            services.create_environment(project, actor=admin, name=name, **policy)
            self.stdout.write(f"Environment “{name}” created.")
        self.stdout.write(self.style.SUCCESS("Demo environments ready: staging, production."))
        self._demo_requests(project)

    def _demo_requests(self, project) -> None:
        version = ModelVersion.objects.filter(model__project=project, model__name="Churn risk", number=1,
                                              status=ModelVersion.Status.READY).first()
        users = {u.username: u for u in User.objects.filter(username__in=["scientist", "approver1"])}
        if version is None or len(users) < 2 or ApprovalRequest.objects.filter(model_version=version).exists():
            return
        staging = Environment.objects.get(project=project, slug="staging")
        production = Environment.objects.get(project=project, slug="production")
        request = services.request_approval(
            version, staging, actor=users["scientist"], answers=ANSWERS,
            justification="Trial on staging traffic for two weeks before asking for production.",
        )
        services.decide(request, actor=users["approver1"], verdict="approve",
                        comment="Fine for a staging trial. Before production, add a validation on recent data.")
        services.request_approval(
            version, production, actor=users["scientist"], answers=ANSWERS,
            justification="Two weeks on staging went as expected; the retention team wants it for next quarter.",
        )
        self.stdout.write("Demo approvals: Churn risk v1 approved for staging, waiting for production.")
