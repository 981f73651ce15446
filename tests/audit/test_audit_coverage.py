"""Every public service function that changes state leaves an audit event: proven by calling it.

The services are enumerated with `inspect`, so a new public function fails `test_every_service_function_is_
accounted_for` until it gets a case below (a call asserting the audit action it records), an entry in
COVERED_ELSEWHERE (a heavier test, named by file, that asserts its action) or an entry in NOT_AUDITED
saying why it records nothing (read-only helpers, pure validation, the job machinery in core, which sits
left of audit in the dependency order).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db.models import Max
from django.test import RequestFactory

from apps.audit.models import AuditEvent
from tests.conftest import make_user

SERVICE_MODULES = [
    "apps.accounts.services",
    "apps.accounts.sso_services",
    "apps.approvals.services",
    "apps.deployments.services",
    "apps.registry.services.imports",
    "apps.registry.services.metadata",
    "apps.registry.services.versions",
    "apps.datasets.services",
    "apps.monitoring.services",
    "apps.monitoring.alerts",
    "apps.monitoring.retraining.service",
    "apps.core.services",
]

READ_ONLY = "read-only: answers a question, changes nothing"
PURE = "pure validation or formatting of its arguments; no database writes"
CORE_JOBS = ("core's job machinery: updates the Job row only; core sits left of audit in the dependency "
             "order, and whoever starts a job audits the action it belongs to")

NOT_AUDITED = {
    "apps.accounts.services.can_deactivate": READ_ONLY,
    "apps.accounts.services.find_user": READ_ONLY,
    "apps.accounts.services.local_login_refusal": READ_ONLY,
    "apps.accounts.services.login_locked_for": READ_ONLY,
    "apps.accounts.sso_services.groups_from_claim": PURE,
    "apps.accounts.sso_services.username_from_claims": PURE,
    "apps.approvals.services.clean_environment_fields": PURE,
    "apps.approvals.services.current_approvals": READ_ONLY,
    "apps.approvals.services.evidence_packet": "builds the packet dict that request_approval freezes (audited)",
    "apps.approvals.services.is_approved_for": READ_ONLY,
    "apps.approvals.services.may_decide": READ_ONLY,
    "apps.approvals.services.waiting_for": READ_ONLY,
    "apps.deployments.services.deployed_in": READ_ONLY,
    "apps.deployments.services.deployments_of_version": READ_ONLY,
    "apps.deployments.services.history": READ_ONLY,
    "apps.deployments.services.may_deploy": READ_ONLY,
    "apps.deployments.services.refusal": READ_ONLY,
    "apps.registry.services.imports.checked_format": (
        "tells a stored upload's format; deletes the file if refused (nothing became a version yet)"),
    "apps.registry.services.imports.store_upload": (
        "keeps an incoming file before it is a version (a refused file is deleted); the version it becomes "
        "is audited by create_version (model.import_started)"),
    "apps.registry.services.imports.training_sample": READ_ONLY,
    "apps.registry.services.metadata.clean_lineage": PURE,
    "apps.registry.services.metadata.clean_model_fields": PURE,
    "apps.datasets.services.compare_versions": READ_ONLY,
    "apps.datasets.services.upload_too_large": READ_ONLY,
    "apps.monitoring.services.clean_items": PURE,
    "apps.monitoring.services.parse_feedback_csv": PURE,
    "apps.monitoring.services.match_pending": (
        "derived bookkeeping: links labels already audited on receipt (monitoring.feedback_received) to the "
        "predictions they belong to"),
    "apps.monitoring.services.settings_for": "read, or create the defaults row on first read (no decision)",
    "apps.monitoring.alerts.alert_url": PURE,
    "apps.monitoring.alerts.describe": PURE,
    "apps.monitoring.alerts.format_value": PURE,
    "apps.monitoring.alerts.health": READ_ONLY,
    "apps.monitoring.alerts.health_of": READ_ONLY,
    "apps.monitoring.alerts.link_for": PURE,
    "apps.monitoring.alerts.open_alerts": READ_ONLY,
    "apps.monitoring.alerts.recipients": READ_ONLY,
    "apps.monitoring.alerts.unresolved_q": PURE,
    "apps.monitoring.alerts.webhook_payload": PURE,
    "apps.monitoring.alerts.window_words": PURE,
    "apps.monitoring.retraining.service.justification": PURE,
    "apps.monitoring.retraining.service.latest_runs": READ_ONLY,
    "apps.monitoring.retraining.service.retrainability": READ_ONLY,
    "apps.monitoring.retraining.service.runs_of": READ_ONLY,
    "apps.core.services.create_job": CORE_JOBS,
    "apps.core.services.fail_job": CORE_JOBS,
    "apps.core.services.report_progress": CORE_JOBS,
    "apps.core.services.run_job": CORE_JOBS,
    "apps.core.services.requeue_stalled_jobs": CORE_JOBS + "; it sends again what was already decided and queued",
    "apps.core.services.start_job": CORE_JOBS,
    "apps.core.services.succeed_job": CORE_JOBS,
    "apps.core.services.start_system_check": CORE_JOBS + "; a system check only reads the installation",
    "apps.core.services.run_system_check": CORE_JOBS + "; a system check only reads the installation",
}

# Functions whose real run needs a model import, training or a stream of predictions: the named test
# calls them (directly or through the entry point named) and asserts the action. Checked below: the file
# exists and mentions both the entry point and the action.
COVERED_ELSEWHERE = {
    "apps.registry.services.imports.import_version": ("tests/registry/test_import.py", "run_import(",
                                                      "model.imported"),
    "apps.registry.services.versions.reexamine_version": ("tests/registry/test_reexamine.py", "reexamine/",
                                                         "model.reexamine"),
    "apps.monitoring.alerts.evaluate_all": ("tests/monitoring/test_alerts.py", "evaluate_all", "alert.opened"),
    "apps.monitoring.alerts.evaluate_rule": ("tests/monitoring/test_alerts.py", "evaluate_all", "alert.resolved"),
    "apps.monitoring.retraining.service.start_retraining": ("tests/monitoring/test_retraining.py",
                                                           "start_retraining", "retraining.started"),
    "apps.monitoring.retraining.service.start_scheduled": ("tests/monitoring/test_retraining.py",
                                                          "start_scheduled", "retraining.started"),
    "apps.monitoring.retraining.service.run": ("tests/monitoring/test_retraining.py", "retraining.run(",
                                               "retraining.finished"),
    "apps.approvals.services.expire_due": ("tests/approvals/test_notifications.py", "expire_due",
                                           "approval.expired"),
}

ROOT = Path(__file__).resolve().parents[2]


def _service_functions() -> dict[str, Callable]:
    found = {}
    for name in SERVICE_MODULES:
        module = importlib.import_module(name)
        for attr, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ == name and not attr.startswith("_"):
                found[f"{name}.{attr}"] = func
    return found


# --- The cases --------------------------------------------------------------------------------------

CASES: dict[str, Callable] = {}


def case(qualname: str):
    def register(func):
        assert qualname not in CASES, qualname
        CASES[qualname] = func
        return func
    return register


@dataclass
class World:
    people: dict
    project: object
    version: object
    version2: object
    sandbox: object
    production: object

    def deployment(self):
        from apps.deployments import services as deployments

        return deployments.deploy(self.project, actor=self.people["scientist"], name="Churn API",
                                  environment=self.sandbox, version=self.version)

    def request(self, environment=None):
        from apps.approvals import services as approvals

        return approvals.request_approval(self.version, environment or self.production,
                                          actor=self.people["scientist"], justification="Ready", answers=ANSWERS)

    def alert(self):
        from apps.monitoring import alerts
        from apps.monitoring.models import Alert

        rule = alerts.create_rule(self.deployment(), actor=self.people["admin"], name="Errors", metric="error_rate",
                                  comparator="gt", threshold=0.5)
        return Alert.objects.create(rule=rule, severity=rule.severity, title="Errors above 1")


ANSWERS = {"intended_use": "Retention calls", "affected_people": "Customers", "fairness_checked": True,
           "fallback_plan": "Agents call everyone as before"}


def _http(user=None):
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="192.0.2.10")
    request.session = {}
    if user is not None:
        request.user = user
    return request


# Accounts: sign-ins, projects, membership and roles, users, tokens.

@case("apps.accounts.services.record_login")
def _(w):
    from apps.accounts import services as s
    return lambda: s.record_login(w.people["viewer"], _http()), "auth.login"


@case("apps.accounts.services.record_failed_login")
def _(w):
    from apps.accounts import services as s
    return lambda: s.record_failed_login("viewer", _http()), "auth.login_failed"


@case("apps.accounts.services.record_refused_login")
def _(w):
    from apps.accounts import services as s
    return lambda: s.record_refused_login("viewer", _http()), "auth.login_failed"


@case("apps.accounts.services.record_logout")
def _(w):
    from apps.accounts import services as s
    return lambda: s.record_logout(w.people["viewer"], _http(w.people["viewer"])), "auth.logout"


@case("apps.accounts.services.create_project")
def _(w):
    from apps.accounts import services as s
    return lambda: s.create_project(actor=w.people["staff"], slug="fraud", name="Fraud"), "project.create"


@case("apps.accounts.services.add_member")
def _(w):
    from apps.accounts import services as s
    newcomer = make_user("newcomer")
    return lambda: s.add_member(w.project, actor=w.people["admin"], user=newcomer, role="viewer"), "membership.add"


@case("apps.accounts.services.invite_member")
def _(w):
    from apps.accounts import services as s
    return (lambda: s.invite_member(w.project, actor=w.people["admin"], email="new.person@example.org",
                                    role="viewer"), "user.invite")


@case("apps.accounts.services.change_role")
def _(w):
    from apps.accounts import services as s
    membership = w.project.memberships.get(user=w.people["viewer"])
    return lambda: s.change_role(membership, actor=w.people["admin"], role="approver"), "membership.change_role"


@case("apps.accounts.services.remove_member")
def _(w):
    from apps.accounts import services as s
    membership = w.project.memberships.get(user=w.people["viewer"])
    return lambda: s.remove_member(membership, actor=w.people["admin"]), "membership.remove"


@case("apps.accounts.services.set_user_active")
def _(w):
    from apps.accounts import services as s
    leaver = make_user("leaver")
    return lambda: s.set_user_active(leaver, actor=w.people["staff"], active=False), "user.deactivate"


@case("apps.accounts.services.create_token")
def _(w):
    from apps.accounts import services as s
    return lambda: s.create_token(actor=w.people["scientist"], name="ci", project=w.project), "token.create"


@case("apps.accounts.services.revoke_token")
def _(w):
    from apps.accounts import services as s
    token, _ = s.create_token(actor=w.people["scientist"], name="ci", project=w.project)
    return lambda: s.revoke_token(token, actor=w.people["scientist"]), "token.revoke"


# Single sign-on: accounts and group-to-role mappings.

@case("apps.accounts.sso_services.provision_user")
def _(w):
    from apps.accounts import sso_services as s
    return lambda: s.provision_user({"sub": "sso-person", "email": "p@example.org"}), "user.create"


@case("apps.accounts.sso_services.refresh_profile")
def _(w):
    from apps.accounts import sso_services as s
    return (lambda: s.refresh_profile(w.people["viewer"], {"sub": "viewer", "email": "changed@example.org"}),
            "user.update")


@case("apps.accounts.sso_services.create_group_mapping")
def _(w):
    from apps.accounts import sso_services as s
    return (lambda: s.create_group_mapping(actor=w.people["staff"], group="analysts", project=w.project,
                                           role="viewer"), "sso.mapping.create")


@case("apps.accounts.sso_services.change_group_mapping")
def _(w):
    from apps.accounts import sso_services as s
    mapping = s.create_group_mapping(actor=w.people["staff"], group="analysts", project=w.project, role="viewer")
    return lambda: s.change_group_mapping(mapping, actor=w.people["staff"], role="scientist"), "sso.mapping.change"


@case("apps.accounts.sso_services.delete_group_mapping")
def _(w):
    from apps.accounts import sso_services as s
    mapping = s.create_group_mapping(actor=w.people["staff"], group="analysts", project=w.project, role="viewer")
    return lambda: s.delete_group_mapping(mapping, actor=w.people["staff"]), "sso.mapping.delete"


@case("apps.accounts.sso_services.apply_group_mappings")
def _(w):
    from apps.accounts import sso_services as s
    s.create_group_mapping(actor=w.people["staff"], group="analysts", project=w.project, role="viewer")
    newcomer = make_user("sso-newcomer")
    return lambda: s.apply_group_mappings(newcomer, ["analysts"]), "membership.add"


@case("apps.accounts.sso_services.record_sso_failure")
def _(w):
    from apps.accounts import sso_services as s
    return lambda: s.record_sso_failure("state mismatch", _http()), "auth.login_failed"


# Approvals: environments, requests, decisions, packet exports.

@case("apps.approvals.services.create_environment")
def _(w):
    from apps.approvals import services as s
    return (lambda: s.create_environment(w.project, actor=w.people["admin"], name="staging", required_approvals=1),
            "environment.create")


@case("apps.approvals.services.update_environment")
def _(w):
    from apps.approvals import services as s
    return (lambda: s.update_environment(w.production, actor=w.people["admin"], required_approvals=2),
            "environment.update")


@case("apps.approvals.services.request_approval")
def _(w):
    return w.request, "approval.request"


@case("apps.approvals.services.withdraw")
def _(w):
    from apps.approvals import services as s
    request = w.request()
    return lambda: s.withdraw(request, actor=w.people["scientist"], reason="Not yet"), "approval.withdraw"


@case("apps.approvals.services.decide")
def _(w):
    from apps.approvals import services as s
    request = w.request()
    return (lambda: s.decide(request, actor=w.people["approver"], verdict="approve", comment="Evidence reviewed"),
            "approval.decision")


@case("apps.approvals.services.record_packet_export")
def _(w):
    from apps.approvals import services as s
    return (lambda: s.record_packet_export(w.version, actor=w.people["approver"], sections=["summary"]),
            "audit.packet_export")


@case("apps.deployments.services.deploy_approved")
def _(w):
    from apps.approvals import services as approvals
    from apps.deployments import services as s
    approvals.update_environment(w.production, actor=w.people["admin"], auto_deploy=True)
    w.production.refresh_from_db()
    request = w.request()
    approvals.decide(request, actor=w.people["approver"], verdict="approve", comment="Evidence reviewed")
    return lambda: s.deploy_approved(request), "deployment.create"


# Deployments: create, promote, roll back, challengers, settings, stop/resume, tokens.

@case("apps.deployments.services.deploy")
def _(w):
    return w.deployment, "deployment.create"


@case("apps.deployments.services.promote")
def _(w):
    from apps.deployments import services as s
    deployment = w.deployment()
    return lambda: s.promote(deployment, w.version2, actor=w.people["scientist"], reason="Better"), \
        "deployment.promote"


@case("apps.deployments.services.rollback")
def _(w):
    from apps.deployments import services as s
    deployment = s.promote(w.deployment(), w.version2, actor=w.people["scientist"], reason="Better")
    return lambda: s.rollback(deployment, actor=w.people["scientist"], reason="Worse"), "deployment.rollback"


@case("apps.deployments.services.set_challenger")
def _(w):
    from apps.deployments import services as s
    deployment = w.deployment()
    return (lambda: s.set_challenger(deployment, w.version2, actor=w.people["scientist"], mode="shadow"),
            "deployment.challenger")


@case("apps.deployments.services.update")
def _(w):
    from apps.deployments import services as s
    deployment = w.deployment()
    return lambda: s.update(deployment, actor=w.people["scientist"], description="Scores churn"), \
        "deployment.update"


@case("apps.deployments.services.set_status")
def _(w):
    from apps.deployments import services as s
    deployment = w.deployment()
    return lambda: s.set_status(deployment, actor=w.people["scientist"], active=False, reason="Paused"), \
        "deployment.stop"


@case("apps.deployments.services.create_token")
def _(w):
    from apps.deployments import services as s
    deployment = w.deployment()
    return lambda: s.create_token(deployment, actor=w.people["scientist"], name="app"), "deployment.token_create"


@case("apps.deployments.services.revoke_token")
def _(w):
    from apps.deployments import services as s
    token, _ = s.create_token(w.deployment(), actor=w.people["scientist"], name="app")
    return lambda: s.revoke_token(token, actor=w.people["scientist"]), "deployment.token_revoke"


# Registry: models, versions, imports, trust, archive.

@case("apps.registry.services.metadata.create_model")
def _(w):
    from apps.registry.services import metadata as s
    return lambda: s.create_model(w.project, actor=w.people["scientist"], name="Fraud"), "model.create"


@case("apps.registry.services.metadata.get_or_create_model")
def _(w):
    from apps.registry.services import metadata as s
    return lambda: s.get_or_create_model(w.project, actor=w.people["scientist"], name="Fraud"), "model.create"


@case("apps.registry.services.metadata.update_model")
def _(w):
    from apps.registry.services import metadata as s
    return (lambda: s.update_model(w.version.model, actor=w.people["scientist"], description="Scores churn"),
            "model.update")


@case("apps.registry.services.imports.create_version")
def _(w):
    from apps.registry.services import imports as s
    return lambda: s.create_version(w.version.model, actor=w.people["scientist"], format="skops"), \
        "model.import_started"


@case("apps.registry.services.imports.start_import")
def _(w):
    from apps.registry.services import imports as s
    from tests.registry.conftest import skops_bytes, upload
    return (lambda: s.start_import(w.project, actor=w.people["scientist"], name="Churn", fmt="skops",
                                   uploaded=upload("tree.skops", skops_bytes())), "model.import_started")


@case("apps.registry.services.versions.update_version")
def _(w):
    from apps.registry.services import versions as s
    return lambda: s.update_version(w.version, actor=w.people["scientist"], description="First"), \
        "model.version_update"


@case("apps.registry.services.versions.archive_version")
def _(w):
    from apps.registry.services import versions as s
    return lambda: s.archive_version(w.version2, actor=w.people["admin"]), "model.archive"


@case("apps.registry.services.versions.restore_version")
def _(w):
    from apps.registry.services import versions as s
    s.archive_version(w.version2, actor=w.people["admin"])
    return lambda: s.restore_version(w.version2, actor=w.people["admin"]), "model.restore"


@case("apps.registry.services.versions.trust_version")
def _(w):
    from apps.registry.models import ModelVersion
    from apps.registry.services import versions as s
    ModelVersion.objects.filter(pk=w.version2.pk).update(status=ModelVersion.Status.QUARANTINED,
                                                         safety={"verdict": "dangerous"})
    w.version2.refresh_from_db()
    return lambda: s.trust_version(w.version2, actor=w.people["admin"], comment="Our own file"), "model.trust"


# Datasets.

@case("apps.datasets.services.create_dataset")
def _(w):
    from apps.datasets import services as s
    return lambda: s.create_dataset(w.project, actor=w.people["scientist"], name="Customers"), "dataset.create"


@case("apps.datasets.services.get_or_create_dataset")
def _(w):
    from apps.datasets import services as s
    return lambda: s.get_or_create_dataset(w.project, actor=w.people["scientist"], name="Customers"), \
        "dataset.create"


@case("apps.datasets.services.delete_dataset")
def _(w):
    from apps.datasets import services as s
    dataset = s.create_dataset(w.project, actor=w.people["scientist"], name="Customers")
    return lambda: s.delete_dataset(dataset, actor=w.people["admin"]), "dataset.delete"


@case("apps.datasets.services.upload")
def _(w):
    from apps.datasets import services as s
    from tests.datasets.conftest import PEOPLE_CSV, upload
    return lambda: s.upload(w.project, actor=w.people["scientist"], name="Customers",
                            uploaded=upload("people.csv", PEOPLE_CSV)), "dataset.upload"


@case("apps.datasets.services.upload_version")
def _(w):
    from apps.datasets import services as s
    from tests.datasets.conftest import PEOPLE_CSV, upload
    dataset = s.create_dataset(w.project, actor=w.people["scientist"], name="Customers")
    return lambda: s.upload_version(dataset, actor=w.people["scientist"],
                                    uploaded=upload("people.csv", PEOPLE_CSV)), "dataset.upload"


def _uploaded_csv(w):
    from apps.datasets import services as s
    from tests.datasets.conftest import PEOPLE_CSV, upload
    dataset = s.create_dataset(w.project, actor=w.people["scientist"], name="Customers")
    version, _ = s.upload_version(dataset, actor=w.people["scientist"], uploaded=upload("people.csv", PEOPLE_CSV))
    return version


@case("apps.datasets.services.profile_version")
def _(w):
    from apps.datasets import services as s
    version = _uploaded_csv(w)
    return lambda: s.profile_version(str(version.profile_job_id)), "dataset.profiled"


def _profiled_csv(w):
    from tests.datasets.conftest import run_profiling
    return run_profiling(_uploaded_csv(w))


@case("apps.datasets.services.set_column_revealed")
def _(w):
    from apps.datasets import services as s
    version = _profiled_csv(w)
    return (lambda: s.set_column_revealed(version, actor=w.people["admin"], column="email", revealed=True),
            "dataset.pii_reveal")


@case("apps.datasets.services.start_anonymisation")
def _(w):
    from apps.datasets import services as s
    version = _profiled_csv(w)
    return (lambda: s.start_anonymisation(version, actor=w.people["scientist"], plan={"name": {"method": "drop"}}),
            "dataset.anonymise")


@case("apps.datasets.services.anonymise")
def _(w):
    from apps.datasets import services as s
    job = s.start_anonymisation(_profiled_csv(w), actor=w.people["scientist"], plan={"name": {"method": "drop"}})
    return lambda: s.anonymise(str(job.id)), "dataset.derive"


# Monitoring: feedback, settings, alert rules and the people's answers to alerts.

@case("apps.monitoring.services.update_settings")
def _(w):
    from apps.monitoring import services as s
    deployment = w.deployment()
    return lambda: s.update_settings(deployment, actor=w.people["scientist"], value_per_prediction=2.5), \
        "monitoring.settings_changed"


@case("apps.monitoring.services.record_feedback")
def _(w):
    from apps.monitoring import services as s
    deployment = w.deployment()
    return (lambda: s.record_feedback(deployment, actor=w.people["scientist"],
                                      items=[{"request_id": "req-1", "label": 1}]), "monitoring.feedback_received")


@case("apps.monitoring.alerts.default_rules")
def _(w):
    from apps.monitoring import alerts as s
    from apps.monitoring.models import AlertRule
    deployment = w.deployment()
    AlertRule.objects.filter(deployment=deployment).delete()  # the deployment's own defaults, made on commit
    return lambda: s.default_rules(deployment), "alert_rule.defaults_created"


@case("apps.monitoring.alerts.create_rule")
def _(w):
    from apps.monitoring import alerts as s
    deployment = w.deployment()
    return (lambda: s.create_rule(deployment, actor=w.people["admin"], name="Errors", metric="error_rate",
                                  comparator="gt", threshold=0.5), "alert_rule.created")


@case("apps.monitoring.alerts.update_rule")
def _(w):
    from apps.monitoring import alerts as s
    rule = w.alert().rule
    return lambda: s.update_rule(rule, actor=w.people["admin"], threshold=0.7), "alert_rule.updated"


@case("apps.monitoring.alerts.delete_rule")
def _(w):
    from apps.monitoring import alerts as s
    rule = w.alert().rule
    return lambda: s.delete_rule(rule, actor=w.people["admin"]), "alert_rule.deleted"


@case("apps.monitoring.alerts.acknowledge")
def _(w):
    from apps.monitoring import alerts as s
    alert = w.alert()
    return lambda: s.acknowledge(alert, actor=w.people["scientist"]), "alert.acknowledged"


@case("apps.monitoring.alerts.snooze")
def _(w):
    from apps.monitoring import alerts as s
    alert = w.alert()
    return lambda: s.snooze(alert, actor=w.people["scientist"], hours=2), "alert.snoozed"


@case("apps.monitoring.alerts.assign")
def _(w):
    from apps.monitoring import alerts as s
    alert = w.alert()
    return lambda: s.assign(alert, actor=w.people["admin"], owner=w.people["scientist"]), "alert.assigned"


# --- The checks ------------------------------------------------------------------------------------


def _unaccounted() -> list[str]:
    return sorted(set(_service_functions()) - set(CASES) - set(NOT_AUDITED) - set(COVERED_ELSEWHERE))


def test_every_service_function_is_accounted_for():
    functions = set(_service_functions())
    listed = set(CASES) | set(NOT_AUDITED) | set(COVERED_ELSEWHERE)
    missing = _unaccounted()
    assert not missing, (
        "New public service functions with no audit case. Add a case in this file asserting the audit action "
        f"each records, or list it in NOT_AUDITED with the reason it records nothing: {missing}")
    assert not sorted(listed - functions), "listed functions that no longer exist"
    assert not set(CASES) & set(NOT_AUDITED) and not set(COVERED_ELSEWHERE) & (set(CASES) | set(NOT_AUDITED))


def test_a_new_service_function_without_a_case_is_caught(monkeypatch):
    from apps.approvals import services as approvals

    def grant_everything(request, *, actor):  # a state change someone forgot to audit
        request.status = "approved"
        request.save()

    grant_everything.__module__ = approvals.__name__
    monkeypatch.setattr(approvals, "grant_everything", grant_everything, raising=False)
    assert _unaccounted() == ["apps.approvals.services.grant_everything"]


@pytest.mark.parametrize(("qualname", "where"), sorted(COVERED_ELSEWHERE.items()))
def test_covered_elsewhere_names_a_test_asserting_the_action(qualname, where):
    path, entry_point, action = where
    text = (ROOT / path).read_text(encoding="utf-8")
    assert f'"{action}' in text, f"{path} does not assert {action}"
    assert entry_point in text, f"{path} does not call {qualname} (through {entry_point})"


@pytest.fixture
def world(people, project, monkeypatch) -> World:
    from apps.approvals import services as approvals
    from apps.deployments import serving
    from apps.registry.models import ModelVersion, RegisteredModel

    # Deploying resolves the MLflow artifact; these versions are rows only (no model is ever loaded here).
    monkeypatch.setattr(serving, "resolve_artifact", lambda version: None)
    model = RegisteredModel.objects.create(project=project, name="Churn", slug="churn", created_by=people["scientist"],
                                           intended_use="Prioritise retention calls", risk_tier="medium")
    versions = [ModelVersion.objects.create(
        model=model, number=n, status=ModelVersion.Status.READY, format="skops", created_by=people["scientist"],
        sha256=f"{n}" * 64, artifact_sha256=f"{n + 2}" * 64, mlflow_model_uri=f"models:/portal.churn/{n}",
        signature={"inputs": [{"name": "age", "type": "long"}], "outputs": []}) for n in (1, 2)]
    sandbox = approvals.create_environment(project, actor=people["admin"], name="sandbox", required_approvals=0)
    production = approvals.create_environment(project, actor=people["admin"], name="production",
                                              required_approvals=1, approver_roles=["approver"])
    return World(people, project, versions[0], versions[1], sandbox, production)


@pytest.mark.parametrize("qualname", sorted(CASES))
def test_service_function_records_its_audit_event(world, qualname, monkeypatch):
    module_name, attr = qualname.rsplit(".", 1)
    module = importlib.import_module(module_name)
    call, action = CASES[qualname](world)

    calls = []
    original = getattr(module, attr)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, attr, spy)
    before = AuditEvent.objects.aggregate(n=Max("sequence"))["n"] or 0
    call()
    assert calls, f"the case for {qualname} never called it"
    recorded = list(AuditEvent.objects.filter(sequence__gt=before).values_list("action", flat=True))
    assert action in recorded, f"{qualname} recorded {recorded}, expected {action!r}"



# Chained queryset writes, model saves, creates and deletes (a plain dict's .update() is not one).
WRITES = re.compile(r"\.save\(|\.create\(|get_or_create\(|\)\.update\(|\.delete\(|bulk_(create|update)\(|record\(")


@pytest.mark.parametrize("qualname", sorted(q for q, why in NOT_AUDITED.items() if why in (READ_ONLY, PURE)))
def test_read_only_and_pure_helpers_write_nothing(qualname):
    """A helper listed as read-only must not grow a write: it would then need a case above."""
    source = inspect.getsource(_service_functions()[qualname])
    assert not WRITES.search(source), f"{qualname} now writes: give it a case, not an exemption"


# --- Evidence, batch, export and monitoring-reference modules: a static net -----------------------------
# Their real runs need a served model; the functions that record are found in the source, everything else
# must be listed here with the reason it records nothing.

JOB_WORK = "the job's own work: the start_... call that queued it recorded the decision (and the job's end)"
EXPORT_PART = "one step of an export whose response is audited by record_export"

MORE_MODULES = [
    "apps.registry.evidence.baselines",
    "apps.registry.evidence.explain",
    "apps.registry.evidence.optimise",
    "apps.registry.evidence.validation",
    "apps.registry.evidence.predictor",
    "apps.deployments.batch",
    "apps.deployments.packaging",
    "apps.deployments.export",
    "apps.monitoring.reference",
]

MORE_NOT_AUDITED = {
    "apps.registry.evidence.baselines.baselines_problem": READ_ONLY,
    "apps.registry.evidence.baselines.baselines_state": READ_ONLY,
    "apps.registry.evidence.baselines.latest_baselines_job": READ_ONLY,
    "apps.registry.evidence.explain.explain_problem": READ_ONLY,
    "apps.registry.evidence.explain.scorer_baseline": PURE,
    "apps.registry.evidence.explain.training_frame": READ_ONLY,
    "apps.registry.evidence.optimise.optimise_problem": READ_ONLY,
    "apps.registry.evidence.optimise.optimise_version": JOB_WORK + " (model.optimised, in its helper)",
    "apps.registry.evidence.validation.expected_schema": READ_ONLY,
    "apps.registry.evidence.predictor.clear_cache": "empties this process's model cache; no stored state",
    "apps.registry.evidence.predictor.convert_inputs": PURE,
    "apps.registry.evidence.predictor.frame_for": PURE,
    "apps.registry.evidence.predictor.input_columns": PURE,
    "apps.registry.evidence.predictor.load_predictor": "loads a model into this process's cache; no stored state",
    "apps.registry.evidence.predictor.raw_model": PURE,
    "apps.registry.evidence.predictor.reference_values": READ_ONLY,
    "apps.registry.evidence.predictor.score_rows": PURE,
    "apps.deployments.batch.chunk_rows": PURE,
    "apps.deployments.batch.dataset_versions_for": READ_ONLY,
    "apps.deployments.batch.log_rows": "prediction log rows (operational data, like any served prediction)",
    "apps.deployments.batch.prediction_columns": PURE,
    "apps.deployments.batch.prepare": JOB_WORK,
    "apps.deployments.batch.score_chunk": JOB_WORK,
    "apps.deployments.batch.serving_model": "loads a model into this worker's cache; no stored state",
    "apps.deployments.packaging.carries_pickle": READ_ONLY,
    "apps.deployments.packaging.dockerfile": PURE,
    "apps.deployments.packaging.package_name": PURE,
    "apps.deployments.packaging.readme": PURE,
    "apps.deployments.packaging.refusal": READ_ONLY,
    "apps.deployments.packaging.requirements": PURE,
    "apps.deployments.export.csv_chunks": EXPORT_PART,
    "apps.deployments.export.csv_response": EXPORT_PART,
    "apps.deployments.export.lines": EXPORT_PART,
    "apps.deployments.export.parquet_response": EXPORT_PART,
    "apps.deployments.export.plan": EXPORT_PART,
    "apps.deployments.export.respond": "calls record_export for every export it answers",
    "apps.deployments.export.used_filters": PURE,
    "apps.deployments.export.write_parquet": EXPORT_PART,
    "apps.monitoring.reference.build": "the drift reference job's work: derived statistics, no decision",
    "apps.monitoring.reference.compute": "the drift reference job: derived statistics, no decision",
    "apps.monitoring.reference.dataset_for": READ_ONLY,
    "apps.monitoring.reference.profile_for": "reads the drift reference, queueing its (derived) computation once",
    "apps.monitoring.reference.scalar_predictions": PURE,
    "apps.monitoring.reference.settings_for": "read, or create the defaults row on first read (no decision)",
}


def test_every_evidence_batch_and_export_function_records_or_says_why_not():
    unlisted, listed_but_recording = [], []
    for name in MORE_MODULES:
        module = importlib.import_module(name)
        for attr, func in inspect.getmembers(module, inspect.isfunction):
            if func.__module__ != name or attr.startswith("_"):
                continue
            qualname = f"{name}.{attr}"
            records = "record(" in inspect.getsource(func)
            if not records and qualname not in MORE_NOT_AUDITED:
                unlisted.append(qualname)
            if records and qualname in MORE_NOT_AUDITED:
                listed_but_recording.append(qualname)
    assert not unlisted, f"these change nothing worth auditing? list them with a reason, or record: {unlisted}"
    assert not listed_but_recording, f"these record now; drop them from MORE_NOT_AUDITED: {listed_but_recording}"

