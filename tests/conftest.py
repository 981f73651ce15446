"""Personas shared by every test: one project, a member per role, a staff user and an outsider."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts import services as account_services
from apps.accounts.models import Membership, Project, User

PASSWORD = "correct-horse-battery-staple"
ROLES = ["viewer", "scientist", "approver", "admin"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # Real hashing costs ~0.3 s a user; the tests are about access, not about PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Lockout counters and throttles live in the cache; no test may inherit another's.
    cache.clear()
    yield
    cache.clear()


def make_user(username: str, *, staff: bool = False, **extra) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.org", password=PASSWORD,
                                    is_staff=staff, **extra)
    return user


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(slug="alpha", name="Alpha")


@pytest.fixture
def other_project(db) -> Project:
    return Project.objects.create(slug="beta", name="Beta")


@pytest.fixture
def people(project, other_project) -> dict[str, User]:
    """admin / approver / scientist / viewer of `project`; `outsider` admins `other_project`; `staff`."""
    people = {}
    for role in ROLES:
        people[role] = make_user(role)
        Membership.objects.create(user=people[role], project=project, role=role)
    people["outsider"] = make_user("outsider")
    Membership.objects.create(user=people["outsider"], project=other_project, role="admin")
    people["staff"] = make_user("staffer", staff=True)
    return people


@pytest.fixture
def client_as():
    """A browser-like client signed in as the given user (session auth, CSRF enforced)."""

    def _client(user) -> Client:
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        return client

    return _client


@pytest.fixture
def api_as():
    """An API client authenticating with a real token of the given user (optionally project-scoped)."""

    def _api(user, *, project=None) -> APIClient:
        _, key = account_services.create_token(actor=user, name="test", project=project)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return _api
