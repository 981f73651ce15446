"""Accounts API: token login, projects, memberships, API tokens, user (de)activation. Thin over services."""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action, api_view, permission_classes, throttle_classes
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from apps.accounts import services
from apps.accounts.models import ApiToken, Membership, Notification, Project
from apps.accounts.permissions import Action, PortalPermission, can, require, shares_project_with, token_allows
from apps.audit.services import request_client_ip

User = get_user_model()


def service_errors(exc: DjangoValidationError) -> exceptions.ValidationError:
    return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {
        "non_field_errors": exc.messages})


def call_service(service, *args, denied: str, **kwargs):
    """Run a service for an API view: its PermissionDenied is a 403 (with its own reason, else `denied`) and
    its ValidationError a 400 naming the fields."""
    try:
        return service(*args, **kwargs)
    except DjangoPermissionDenied as exc:
        raise exceptions.PermissionDenied(str(exc) or denied) from None
    except DjangoValidationError as exc:
        raise service_errors(exc) from None


def project_for(request, slug: str, field: str = "project") -> Project:
    """The project named in a request body, if the caller (and their token) may see it; else a 400 on `field`."""
    project = Project.objects.filter(slug=slug or "").first()
    if project is None or not token_allows(request.auth, project) or not can(request.user, Action.VIEW_PROJECT,
                                                                             project):
        raise exceptions.ValidationError({field: ["No such project, or you are not a member of it."]})
    return project


# --- Token login ------------------------------------------------------------------------------------


class TokenThrottle(SimpleRateThrottle):
    """Password guessing through the API is limited per client address (TOKEN_THROTTLE_RATE)."""

    scope = "token"

    def get_cache_key(self, request, view):
        # Not DRF's get_ident(): it trusts any client's X-Forwarded-For, so a made-up header per request
        # would escape the limit. Use the address the lockout and audit use (proxy header only if trusted).
        return self.cache_format % {"scope": self.scope, "ident": request_client_ip(request) or "-"}


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    name = serializers.CharField(required=False, default="API login", max_length=100)


@extend_schema(request=TokenRequestSerializer,
               responses={200: inline_serializer("TokenResponse", {"token": serializers.CharField()})})
@api_view(["POST"])
@permission_classes([permissions.AllowAny])
@throttle_classes([TokenThrottle])
def obtain_token(request):
    """Exchange a username and password for an API token (rate-limited; failures count toward lockout)."""
    serializer = TokenRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    refusal = services.local_login_refusal()
    if refusal:
        raise exceptions.PermissionDenied(refusal)
    wait = services.login_locked_for(data["username"], request)
    if wait:
        services.record_failed_login(data["username"], request)
        raise exceptions.AuthenticationFailed(
            f"Too many failed attempts; wait {max(1, round(wait / 60))} minute(s) before trying again.")
    user = authenticate(request, username=data["username"], password=data["password"])
    if user is None:
        refused = getattr(request, "portal_login_refused", None)
        if refused:  # PORTAL_LOCAL_LOGIN=admins: the same rule as the sign-in form
            raise exceptions.PermissionDenied(refused)
        raise exceptions.AuthenticationFailed("Invalid username or password.")
    _, key = services.create_token(actor=user, name=data["name"])
    return Response({"token": key})



# --- Projects and members -----------------------------------------------------------------------------


class ProjectSerializer(serializers.ModelSerializer):
    my_role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["slug", "name", "description", "created_at", "my_role"]
        read_only_fields = ["created_at", "my_role"]

    def get_my_role(self, project) -> str | None:
        if "_roles" not in self.context:  # one query per response, not per project
            self.context["_roles"] = dict(
                Membership.objects.filter(user=self.context["request"].user).values_list("project_id", "role"))
        return self.context["_roles"].get(project.pk)


class ProjectViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                     viewsets.GenericViewSet):
    serializer_class = ProjectSerializer
    permission_classes = [PortalPermission]
    lookup_field = "slug"
    write_action = Action.MANAGE_MEMBERS

    def get_queryset(self):
        projects = Project.objects.visible_to(self.request.user).order_by("name")
        token = self.request.auth
        if getattr(token, "project_id", None):
            projects = projects.filter(pk=token.project_id)
        return projects

    def perform_create(self, serializer):
        try:
            serializer.instance = services.create_project(actor=self.request.user, **serializer.validated_data)
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        except DjangoValidationError as exc:
            raise service_errors(exc) from None


class MembershipSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    email = serializers.EmailField(source="user.email", read_only=True)
    is_active = serializers.BooleanField(source="user.is_active", read_only=True)

    class Meta:
        model = Membership
        fields = ["user", "email", "is_active", "role", "created_at"]


class MemberWriteSerializer(serializers.Serializer):
    user = serializers.CharField(required=False, help_text="username (or e-mail) of an existing user")
    email = serializers.EmailField(required=False, help_text="invite a new user by e-mail")
    role = serializers.ChoiceField(choices=Membership.Role.choices, required=False)


class ProjectMembersViewSet(viewsets.GenericViewSet):
    """Members of one project. Members may list; project admins and staff may change.

    PATCH/DELETE work on `/members/<username>/` or on `/members/` with `{"user": ...}` in the body.
    """

    serializer_class = MembershipSerializer
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"

    def _project(self, action: str) -> Project:
        project = get_object_or_404(Project, slug=self.kwargs["project_slug"])
        if not token_allows(self.request.auth, project):
            raise Http404
        try:
            require(self.request.user, action, project)
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Only project admins and staff may change members.") from None
        return project

    def _membership(self, project: Project, username: str | None) -> Membership:
        if not username:
            raise exceptions.ValidationError({"user": ["Name the member: their username."]})
        return get_object_or_404(Membership.objects.select_related("user", "project"),
                                 project=project, user__username=username)

    def list(self, request, project_slug):
        project = self._project(Action.VIEW_MEMBERS)
        members = project.memberships.select_related("user").order_by("user__username")
        page = self.paginate_queryset(members)
        return self.get_paginated_response(MembershipSerializer(page, many=True).data)

    @extend_schema(request=MemberWriteSerializer, responses={201: MembershipSerializer})
    def create(self, request, project_slug):
        project = self._project(Action.MANAGE_MEMBERS)
        body = MemberWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        role = body.validated_data.get("role", Membership.Role.VIEWER)
        try:
            if body.validated_data.get("user"):
                user = services.find_user(body.validated_data["user"])
                if user is None:
                    raise exceptions.ValidationError({"user": ["No such user. Check the username, or "
                                                               "send `email` to invite someone new."]})
                membership = services.add_member(project, actor=request.user, user=user, role=role)
            elif body.validated_data.get("email"):
                membership = services.invite_member(project, actor=request.user, role=role, request=request,
                                                    email=body.validated_data["email"])
            else:
                raise exceptions.ValidationError({"user": ["Give `user` (existing) or `email` (to invite)."]})
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberWriteSerializer, responses={200: MembershipSerializer})
    def partial_update(self, request, project_slug, username=None):
        project = self._project(Action.MANAGE_MEMBERS)
        body = MemberWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = self._membership(project, username or body.validated_data.get("user"))
        if "role" not in body.validated_data:
            raise exceptions.ValidationError({"role": ["Give the new role."]})
        try:
            membership = services.change_role(membership, actor=request.user, role=body.validated_data["role"])
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, project_slug, username=None):
        project = self._project(Action.MANAGE_MEMBERS)
        body_user = request.data.get("user") if hasattr(request.data, "get") else None  # a JSON list has none
        membership = self._membership(project, username or body_user)
        try:
            services.remove_member(membership, actor=request.user)
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    def retrieve(self, request, project_slug, username=None):
        project = self._project(Action.VIEW_MEMBERS)
        return Response(MembershipSerializer(self._membership(project, username)).data)


class ProjectMembersCollection(ProjectMembersViewSet):
    """`/members/` itself: PATCH and DELETE name the member in the body (`{"user": ...}`), as API.md says."""

    @extend_schema(operation_id="projects_members_change_role_by_body", request=MemberWriteSerializer,
                   responses={200: MembershipSerializer})
    def partial_update(self, request, project_slug, username=None):
        return super().partial_update(request, project_slug)

    @extend_schema(operation_id="projects_members_remove_by_body", request=MemberWriteSerializer,
                   responses={204: None})
    def destroy(self, request, project_slug, username=None):
        return super().destroy(request, project_slug)


# --- API tokens --------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", queryset=Project.objects.all(), required=False,
                                           allow_null=True)
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "key_hint", "project", "status", "created_at", "expires_at", "last_used_at",
                  "revoked_at"]
        read_only_fields = ["id", "key_hint", "status", "created_at", "last_used_at", "revoked_at"]


class ApiTokenViewSet(mixins.ListModelMixin, mixins.CreateModelMixin, mixins.RetrieveModelMixin,
                      mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The caller's own API tokens. The key is returned once, on creation; DELETE revokes."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).select_related("project")

    def create(self, request, *args, **kwargs):
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            token, key = services.create_token(actor=request.user, **body.validated_data)
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response({**self.get_serializer(token).data, "key": key}, status=status.HTTP_201_CREATED)

    def perform_destroy(self, token):
        services.revoke_token(token, actor=self.request.user)


# --- Users (deactivate / reactivate) ------------------------------------------------------------------


class UserViewSet(viewsets.GenericViewSet):
    lookup_field = "username"
    lookup_value_regex = r"[\w.@+-]+"
    serializer_class = serializers.Serializer

    def _target(self, username):
        target = get_object_or_404(User, username=username)
        if not shares_project_with(self.request.user, target):
            raise Http404
        if not services.can_deactivate(self.request.user, target):
            raise exceptions.PermissionDenied("You may not change this user's access.")
        return target

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"])
    def deactivate(self, request, username=None):
        target = self._target(username)
        try:
            services.set_user_active(target, actor=request.user, active=False)
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response({"user": target.username, "is_active": False})

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"])
    def activate(self, request, username=None):
        target = self._target(username)
        services.set_user_active(target, actor=request.user, active=True)
        return Response({"user": target.username, "is_active": True})



# --- Notifications ----------------------------------------------------------------------------------


class NotificationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    unread = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "kind", "title", "body", "url", "project", "created_at", "read_at", "unread"]
        read_only_fields = fields

    def get_unread(self, notification) -> bool:
        return notification.read_at is None


class NotificationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The caller's own notifications, newest first (`?unread=1`: only unread). POST …/read/ and read-all/."""

    serializer_class = NotificationSerializer
    lookup_field = "uuid"
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9a-f-]{36}"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Notification.objects.none()
        notifications = Notification.objects.for_user(self.request.user).select_related("project")
        token = self.request.auth
        if getattr(token, "project_id", None):  # a project-scoped token reads that project's notifications only
            notifications = notifications.filter(project_id=token.project_id)
        if self.action == "list" and self.request.query_params.get("unread") in ("1", "true"):
            notifications = notifications.unread()
        return notifications

    @extend_schema(request=None, responses={200: NotificationSerializer})
    @action(detail=True, methods=["post"])
    def read(self, request, id=None):
        notification = self.get_object()
        services.mark_read(notification, actor=request.user)
        notification.refresh_from_db()
        return Response(self.get_serializer(notification).data)

    @extend_schema(request=None, responses={200: inline_serializer("NotificationsRead", {
        "marked_read": serializers.IntegerField()})})
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request):
        marked = services.mark_all_read(actor=request.user, project_id=getattr(request.auth, "project_id", None))
        return Response({"marked_read": marked})
