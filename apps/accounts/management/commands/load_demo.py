"""Load the demo project and its users (idempotent: safe to run again; passwords are reset to DEMO_PASSWORD)."""

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.accounts.models import Membership, Project
from apps.audit import services as audit

DEFAULT_DEMO_PASSWORD = "portal-demo-2026"

DEMO_USERS = [
    # username, role in the demo project, staff?
    ("admin", Membership.Role.ADMIN, True),
    ("approver1", Membership.Role.APPROVER, False),
    ("approver2", Membership.Role.APPROVER, False),
    ("scientist", Membership.Role.SCIENTIST, False),
    ("viewer", Membership.Role.VIEWER, False),
]


class Command(BaseCommand):
    help = "Create (or refresh) the demo project and users admin, approver1, approver2, scientist, viewer."

    def handle(self, *args, **options):
        password = os.environ.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
        User = get_user_model()
        with transaction.atomic():
            project, created = Project.objects.get_or_create(
                slug="demo", defaults={"name": "Demo project",
                                       "description": "A sandbox to try Portal: import, validate, approve, "
                                                      "deploy and monitor a model."})
            if created:
                audit.record("project.create", actor=None, actor_label="load_demo", obj=project)
            for username, role, staff in DEMO_USERS:
                user, new_user = User.objects.get_or_create(
                    username=username, defaults={"email": f"{username}@demo.portal.local"})
                user.set_password(password)
                user.is_active = True
                user.is_staff = user.is_superuser = staff
                user.save()
                if new_user:
                    audit.record("user.create", actor=None, actor_label="load_demo", obj=user)
                membership, new_member = Membership.objects.get_or_create(
                    user=user, project=project, defaults={"role": role})
                if new_member or membership.role != role:
                    membership.role = role
                    membership.save(update_fields=["role"])
                    audit.record("membership.add", actor=None, actor_label="load_demo", obj=membership,
                                 details={"user": username, "role": role})
        self.stdout.write(self.style.SUCCESS("Demo data ready: project 'demo'."))
        self.stdout.write(f"Demo logins (password: {password}):")
        for username, role, staff in DEMO_USERS:
            self.stdout.write(f"  {username:<10} {role}{' + site staff' if staff else ''}")
