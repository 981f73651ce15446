"""Approval pages: the queue, a request with its evidence and the decision form, requesting from the model card,
and a project's environments with their policies. Every rule is in services.py; these pages only call it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, projects_with_action, require
from apps.approvals import services
from apps.approvals.forms import DecisionForm, EnvironmentForm, RequestApprovalForm, apply_service_errors
from apps.approvals.models import ApprovalRequest, Decision, Environment
from apps.registry.models import ModelVersion

PAGE_SIZE = 25
TABS = [("waiting", "Waiting for me"), ("mine", "My requests"), ("all", "All in my projects")]


def _requests():
    return ApprovalRequest.objects.select_related(
        "environment__project", "model_version__model", "model_version__created_by", "requested_by")


waiting_for = services.waiting_for  # the queue's "Waiting for me" tab and the header badge ask the same rule


@login_required
def queue(request):
    user = request.user
    may_decide_somewhere = projects_with_action(user, Action.DECIDE_APPROVAL).exists()
    tab = request.GET.get("tab") or ("waiting" if may_decide_somewhere else "mine")
    if tab not in dict(TABS):
        tab = "waiting"
    projects = list(Project.objects.visible_to(user).order_by("name"))
    project_slug = request.GET.get("project", "")
    status = request.GET.get("status", "")
    waiting = request.approvals_waiting = waiting_for(user)  # the header badge counts the same list
    if tab == "waiting":
        rows = [r for r in waiting if not project_slug or r.project.slug == project_slug]
    else:
        rows = _requests().visible_to(user)
        if tab == "mine":
            rows = rows.filter(requested_by=user)
        if project_slug:
            rows = rows.filter(environment__project__slug=project_slug)
        if status in ApprovalRequest.Status.values:
            rows = rows.filter(status=status)
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    filters = {k: v for k, v in {"tab": tab, "project": project_slug, "status": status}.items() if v}
    return render(request, "approvals/queue.html", {
        "tab": tab, "tabs": TABS, "page": page, "projects": projects, "project_slug": project_slug,
        "status": status, "statuses": ApprovalRequest.Status.choices, "waiting_count": len(waiting),
        "querystring": urlencode(filters), "may_decide_somewhere": may_decide_somewhere,
    })


def _request_for(request, uuid) -> ApprovalRequest:
    return get_object_or_404(_requests().visible_to(request.user), uuid=uuid)


def _render_detail(request, approval: ApprovalRequest, *, form: DecisionForm | None = None, status: int = 200,
                   denied: str = ""):
    user = request.user
    allowed, why = services.may_decide(user, approval)
    if allowed and form is None:
        form = DecisionForm(reauth=approval.environment.reauth_required)
    decisions = list(approval.decisions.select_related("approver"))
    environment = approval.environment
    return render(request, "approvals/detail.html", {
        "approval": approval, "environment": environment, "project": approval.project,
        "version": approval.model_version, "model": approval.model_version.model,
        "evidence": approval.evidence or {}, "decisions": decisions,
        "approvals_count": sum(1 for d in decisions if d.verdict == Decision.Verdict.APPROVE),
        "artifact_matches": approval.artifact_matches(),
        "answers": _answered_questions(approval),
        "may_decide": allowed, "why_not": why, "form": form if allowed else None, "denied": denied,
        "may_withdraw": approval.status == ApprovalRequest.Status.PENDING and (
            user.pk == approval.requested_by_id or can(user, Action.MANAGE_ENVIRONMENTS, approval)),
        "policy": policy_in_words(environment),
    }, status=status)


def _answered_questions(approval: ApprovalRequest) -> list[dict]:
    answers = dict(approval.answers or {})
    rows = []
    for question in approval.environment.questionnaire:
        if question["key"] in answers:
            rows.append({"text": question["text"], "answer": answers.pop(question["key"])})
    # Answers to questions the environment no longer asks are still part of the record.
    rows += [{"text": key.replace("_", " ").capitalize(), "answer": value} for key, value in answers.items()]
    for row in rows:
        if isinstance(row["answer"], bool):
            row["answer"] = "Yes" if row["answer"] else "No"
    return rows


def policy_in_words(environment: Environment) -> str:
    if not environment.gated:
        return "No approval needed: scientists deploy here directly."
    count = environment.required_approvals
    roles = " or ".join({"approver": "approvers", "admin": "project admins"}.get(r, r)
                        for r in environment.deciding_roles())
    parts = [f"{count} approval{'s' if count != 1 else ''} from {roles}"]
    if environment.high_risk_extra_approval:
        parts.append("high-risk models need one more")
    days = environment.approval_valid_days
    parts.append(f"approvals last {days} day{'s' if days != 1 else ''}" if days else "approvals do not expire")
    parts.append(f"requests nobody decides expire after {environment.request_expiry_days} days")
    if environment.reauth_required:
        parts.append("approvers sign off with their password")
    return "; ".join(parts) + "."


@login_required
def detail(request, uuid):
    return _render_detail(request, _request_for(request, uuid))


@login_required
@require_POST
def decide(request, uuid):
    approval = _request_for(request, uuid)
    form = DecisionForm(request.POST, reauth=approval.environment.reauth_required)
    if not form.is_valid():
        return _render_detail(request, approval, form=form, status=400)
    try:
        services.decide(approval, actor=request.user, verdict=form.cleaned_data["verdict"],
                        comment=form.cleaned_data["comment"], password=form.cleaned_data.get("password"))
    except PermissionDenied as exc:
        return _render_detail(request, approval, status=403,
                              denied=str(exc) or "Your role in this project cannot decide on approvals.")
    except ValidationError as exc:
        apply_service_errors(form, exc)
        approval.refresh_from_db()
        return _render_detail(request, approval, form=form, status=400)
    verdict = Decision.Verdict(form.cleaned_data["verdict"]).label.lower()
    messages.success(request, f"Your decision ({verdict}) is recorded.")
    return redirect("approval-detail", uuid=approval.uuid)


@login_required
@require_POST
def withdraw(request, uuid):
    approval = _request_for(request, uuid)
    try:
        services.withdraw(approval, actor=request.user, reason=request.POST.get("reason", "").strip())
    except PermissionDenied as exc:
        return _render_detail(request, approval, status=403, denied=str(exc) or "You cannot withdraw this request.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, "The request is withdrawn.")
    return redirect("approval-detail", uuid=approval.uuid)


# --- Requesting from the model card ------------------------------------------------------------------------


@login_required
def request_approval(request, model_slug: str, number: int):
    version = get_object_or_404(ModelVersion.objects.visible_to(request.user).select_related("model__project"),
                                model__slug=model_slug, number=number)
    require(request.user, Action.REQUEST_APPROVAL, version)
    initial = {"environment": request.GET.get("environment", "")}
    form = RequestApprovalForm(request.POST or None, version=version, initial=initial)
    status = 200
    if request.method == "POST" and "preview" not in request.POST:
        if form.is_valid():
            try:
                approval = services.request_approval(
                    version, form.cleaned_data["environment"], actor=request.user,
                    justification=form.cleaned_data["justification"], answers=form.answers(),
                    validation=form.cleaned_data["validation"])
            except ValidationError as exc:
                apply_service_errors(form, exc, field_map={"model_version": "__all__"})
            else:
                messages.success(request, f"Approval requested for {approval.environment.name}.")
                return redirect("approval-detail", uuid=approval.uuid)
        status = 400
    environment = form.chosen_environment()
    validation = None
    if form.is_bound and form.data.get("validation"):
        validation = form.fields["validation"].queryset.filter(pk=form.data["validation"]).first()
    return render(request, "approvals/request_form.html", {
        "form": form, "version": version, "model": version.model, "project": version.project,
        "environment": environment, "policy": policy_in_words(environment) if environment else "",
        "preview": services.evidence_packet(version, environment, validation) if environment else None,
    }, status=status)


# --- Environments ------------------------------------------------------------------------------------------


def _project_for(request, slug) -> Project:
    project = get_object_or_404(Project, slug=slug)
    require(request.user, Action.VIEW_PROJECT, project)
    return project


@login_required
def environment_list(request, slug):
    project = _project_for(request, slug)
    environments = [(env, policy_in_words(env)) for env in Environment.objects.filter(project=project)]
    return render(request, "approvals/environment_list.html", {
        "project": project, "environments": environments,
        "may_manage": can(request.user, Action.MANAGE_ENVIRONMENTS, project),
    })


@login_required
def environment_create(request, slug):
    project = _project_for(request, slug)
    require(request.user, Action.MANAGE_ENVIRONMENTS, project)
    form = EnvironmentForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            environment = services.create_environment(project, actor=request.user, name=form.cleaned_data["name"],
                                                      **form.policy())
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Environment {environment.name} created.")
            return redirect("environment-list", slug=project.slug)
    return render(request, "approvals/environment_form.html", {"project": project, "form": form},
                  status=400 if form.errors else 200)


@login_required
def environment_edit(request, slug, env_slug):
    project = _project_for(request, slug)
    environment = get_object_or_404(Environment, project=project, slug=env_slug)
    require(request.user, Action.MANAGE_ENVIRONMENTS, environment)
    form = EnvironmentForm(request.POST or None, environment=environment)
    if request.method == "POST" and form.is_valid():
        try:
            services.update_environment(environment, actor=request.user, **form.policy())
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"The policy of {environment.name} is saved.")
            return redirect(reverse("environment-list", args=[project.slug]) + f"#env-{environment.slug}")
    return render(request, "approvals/environment_form.html",
                  {"project": project, "form": form, "environment": environment},
                  status=400 if form.errors else 200)


urlpatterns = [
    path("approvals/", queue, name="approval-queue"),
    path("approvals/<uuid:uuid>/", detail, name="approval-detail"),
    path("approvals/<uuid:uuid>/decide/", decide, name="approval-decide"),
    path("approvals/<uuid:uuid>/withdraw/", withdraw, name="approval-withdraw"),
    path("models/<slug:model_slug>/v<int:number>/request-approval/", request_approval, name="approval-request"),
    path("projects/<slug:slug>/environments/", environment_list, name="environment-list"),
    path("projects/<slug:slug>/environments/new/", environment_create, name="environment-create"),
    path("projects/<slug:slug>/environments/<slug:env_slug>/edit/", environment_edit, name="environment-edit"),
]
