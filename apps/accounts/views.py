"""Pages for projects, access management and API tokens (the home page is the Operations Center, in monitoring)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.accounts import services, sso, sso_services
from apps.accounts.forms import (
    AddMemberForm,
    GroupMappingForm,
    LockoutAuthenticationForm,
    ProjectForm,
    RoleForm,
    TokenForm,
)
from apps.accounts.models import ApiToken, GroupMapping, Membership, Notification, Project
from apps.accounts.notifications import is_portal_path
from apps.accounts.permissions import Action, may_manage_sso, require, shares_project_with
from apps.core.views import form_errors_from

User = get_user_model()


class PortalLoginView(LoginView):
    form_class = LockoutAuthenticationForm
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "sso_enabled": sso.enabled(),
                "sso_provider": settings.OIDC_PROVIDER_NAME, "local_login": settings.PORTAL_LOCAL_LOGIN}


@login_required
def project_list(request):
    projects = Project.objects.visible_to(request.user).order_by("name")
    page = Paginator(projects, 25).get_page(request.GET.get("page"))
    return render(request, "accounts/project_list.html", {"page": page, "can_create": request.user.is_staff})


@login_required
def project_create(request):
    if not request.user.is_staff:
        raise PermissionDenied
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = services.create_project(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, f"Project “{project.name}” created. Add its first admin below.")
            return redirect("project-members", slug=project.slug)
    return render(request, "accounts/project_form.html", {"form": form})


def _project_for(request, slug: str, action: str = Action.VIEW_PROJECT) -> Project:
    project = get_object_or_404(Project, slug=slug)
    require(request.user, action, project)
    request.session["current_project"] = project.slug  # the switcher follows where the user is
    return project


@login_required
def project_detail(request, slug):
    project = _project_for(request, slug)
    members = project.memberships.select_related("user").order_by("user__username")
    return render(request, "accounts/project_detail.html", {
        "project": project, "members": members,
        "my_role": project.memberships.filter(user=request.user).values_list("role", flat=True).first(),
    })


@login_required
def project_switch(request):
    slug = request.GET.get("project", "")
    if not slug:
        return redirect("project-list")
    return redirect("project-detail", slug=slug)


@login_required
def members(request, slug):
    project = _project_for(request, slug, Action.MANAGE_MEMBERS)
    form = AddMemberForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        role = form.cleaned_data["role"]
        try:
            if form.existing_user is not None:
                membership = services.add_member(project, actor=request.user, user=form.existing_user, role=role)
                messages.success(request, f"{membership.user.username} added as {membership.get_role_display()}.")
            else:
                membership = services.invite_member(project, actor=request.user, email=form.cleaned_data["user"],
                                                    role=role, request=request)
                messages.success(request, f"Invitation sent to {membership.user.email} "
                                          f"(username {membership.user.username}).")
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            return redirect("project-members", slug=project.slug)
    memberships = project.memberships.select_related("user").order_by("user__username")
    rows = [{"membership": m, "role_form": RoleForm(initial={"role": m.role}, prefix=m.user.username),
             "can_deactivate": services.can_deactivate(request.user, m.user)} for m in memberships]
    return render(request, "accounts/members.html", {"project": project, "form": form, "rows": rows})


def _membership_for(request, slug: str, username: str) -> Membership:
    project = _project_for(request, slug, Action.MANAGE_MEMBERS)
    return get_object_or_404(Membership.objects.select_related("user", "project"),
                             project=project, user__username=username)


@login_required
@require_POST
def member_role(request, slug, username):
    membership = _membership_for(request, slug, username)
    form = RoleForm(request.POST, prefix=username)
    if not form.is_valid():
        messages.error(request, "Choose one of the listed roles.")
        return redirect("project-members", slug=slug)
    try:
        membership = services.change_role(membership, actor=request.user, role=form.cleaned_data["role"])
    except ValidationError as exc:
        messages.error(request, " ".join(m for ms in exc.message_dict.values() for m in ms))
    else:
        messages.success(request, f"{username} is now {membership.get_role_display()}.")
    return redirect("project-members", slug=slug)


@login_required
def member_remove(request, slug, username):
    membership = _membership_for(request, slug, username)
    if request.method == "POST":
        try:
            services.remove_member(membership, actor=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(m for ms in exc.message_dict.values() for m in ms))
        else:
            messages.success(request, f"{username} removed from {membership.project.name}.")
        return redirect("project-members", slug=slug)
    return render(request, "accounts/confirm.html", {
        "title": f"Remove {username} from {membership.project.name}?",
        "body": "They will lose access to this project's data, models and deployments at once. "
                "Their past actions stay in the audit trail.",
        "confirm_label": "Remove member", "danger": True,
        "cancel_url": reverse("project-members", args=[slug]),
    })


@login_required
def user_access(request, username, activate: bool):
    target = get_object_or_404(User, username=username)
    if not services.can_deactivate(request.user, target):
        # Outsiders learn nothing about which users exist.
        raise PermissionDenied if shares_project_with(request.user, target) else Http404
    back = request.GET.get("next") or request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        back = "/"
    if request.method == "POST":
        try:
            services.set_user_active(target, actor=request.user, active=activate)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{username} {'reactivated' if activate else 'deactivated'}.")
        return redirect(back)
    verb = "Reactivate" if activate else "Deactivate"
    body = ("They will be able to sign in again with their password." if activate else
            "They will be signed out everywhere, cannot sign in, and their API tokens are revoked. "
            "Their memberships and history are kept, so you can reactivate them later.")
    return render(request, "accounts/confirm.html", {
        "title": f"{verb} {username}?", "body": body, "confirm_label": f"{verb} user",
        "danger": not activate, "cancel_url": back, "next": back,
    })


@login_required
def tokens(request):
    form = TokenForm(request.POST or None, user=request.user)
    new_key = None
    if request.method == "POST" and form.is_valid():
        try:
            token, new_key = services.create_token(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, f"Token “{token.name}” created. Copy it now: it will not be shown again.")
            form = TokenForm(user=request.user)
    token_list = ApiToken.objects.filter(user=request.user).select_related("project")
    return render(request, "accounts/tokens.html", {"form": form, "tokens": token_list, "new_key": new_key})


@login_required
def token_revoke(request, token_id):
    token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
    if request.method == "POST":
        services.revoke_token(token, actor=request.user)
        messages.success(request, f"Token “{token.name}” revoked. Scripts using it will now get 401.")
        return redirect("tokens")
    return render(request, "accounts/confirm.html", {
        "title": f"Revoke the token “{token.name}”?",
        "body": "Any script using it stops working at once. This cannot be undone.",
        "confirm_label": "Revoke token", "danger": True, "cancel_url": reverse("tokens"),
    })


# --- Notifications ----------------------------------------------------------------------------------


@login_required
def notification_list(request):
    unread_only = request.GET.get("unread") == "1"
    notifications = Notification.objects.for_user(request.user).select_related("project")
    if unread_only:
        notifications = notifications.unread()
    page = Paginator(notifications, 25).get_page(request.GET.get("page"))
    return render(request, "accounts/notifications.html", {"page": page, "unread_only": unread_only})


@login_required
@require_POST
def notification_read_all(request):
    count = services.mark_all_read(actor=request.user)
    messages.success(request, f"{count} notification{'' if count == 1 else 's'} marked read.")
    return redirect("notification-list")


@login_required
def notification_open(request, notification_id):
    """Mark the notification read and go where it points (only to a path on this site)."""
    notification = get_object_or_404(Notification.objects.for_user(request.user), uuid=notification_id)
    services.mark_read(notification, actor=request.user)
    if not is_portal_path(notification.url):
        messages.error(request, "This notification's link does not lead to a page of the portal, so it was not opened.")
        return redirect("notification-list")
    return redirect(notification.url)


# --- Single sign-on group mappings (site staff) ------------------------------------------------------


def _require_sso_admin(request) -> None:
    if not may_manage_sso(request.user):
        raise PermissionDenied


@login_required
def sso_mappings(request):
    _require_sso_admin(request)
    form = GroupMappingForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            mapping = sso_services.create_group_mapping(actor=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form_errors_from(exc, form)
        else:
            messages.success(request, f"Members of “{mapping.group}” will be {mapping.get_role_display()} in "
                                      f"{mapping.project.name} from their next sign-in.")
            return redirect("sso-mappings")
    mappings = GroupMapping.objects.select_related("project").order_by("group", "project__name")
    return render(request, "accounts/sso_mappings.html", {
        "form": form, "mappings": mappings, "sso_enabled": sso.enabled(),
        "groups_claim": settings.OIDC_GROUPS_CLAIM}, status=400 if form.errors else 200)


@login_required
def sso_mapping_delete(request, mapping_id):
    _require_sso_admin(request)
    mapping = get_object_or_404(GroupMapping.objects.select_related("project"), uuid=mapping_id)
    if request.method == "POST":
        sso_services.delete_group_mapping(mapping, actor=request.user)
        messages.success(request, f"Mapping of “{mapping.group}” to {mapping.project.name} deleted.")
        return redirect("sso-mappings")
    return render(request, "accounts/confirm.html", {
        "title": f"Delete the mapping of “{mapping.group}” to {mapping.project.name}?",
        "body": "People who got their role in this project only through this group lose it at their next "
                "sign-in. Members added by hand keep their role.",
        "confirm_label": "Delete mapping", "danger": True, "cancel_url": reverse("sso-mappings"),
    })
