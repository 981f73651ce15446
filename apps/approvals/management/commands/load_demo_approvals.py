"""Add the demo project's environments: staging (1 approval) and production (2 approvers, high risk +1,
approvals valid 90 days). Idempotent; run `load_demo` first."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import Project, User
from apps.approvals import services
from apps.approvals.models import Environment

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
