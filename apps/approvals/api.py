"""Approvals API: environments and their policies, approval requests with evidence, decisions, withdrawal."""

from __future__ import annotations

import contextlib
import uuid as uuid_lib

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service, project_for
from apps.approvals import services
from apps.approvals.models import ApprovalRequest, Decision, Environment
from apps.registry.models import ModelValidation, ModelVersion


def _scoped(request, queryset, project_path: str):
    scoped = getattr(request.auth, "project_id", None)
    return queryset.filter(**{project_path: scoped}) if scoped else queryset


class EnvironmentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    gated = serializers.BooleanField(read_only=True)
    questionnaire = serializers.ListField(read_only=True)

    class Meta:
        model = Environment
        fields = ["id", "project", "name", "slug", "description", "gated", "required_approvals", "approver_roles",
                  "high_risk_extra_approval", "approval_valid_days", "request_expiry_days", "reauth_required",
                  "auto_deploy", "questionnaire", "created_at"]
        read_only_fields = fields


class EnvironmentWriteSerializer(serializers.Serializer):
    project = serializers.SlugField(required=False)
    name = serializers.CharField(max_length=80, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    required_approvals = serializers.IntegerField(required=False, min_value=0, max_value=10)
    approver_roles = serializers.ListField(child=serializers.CharField(max_length=20), required=False, max_length=2)
    high_risk_extra_approval = serializers.BooleanField(required=False)
    approval_valid_days = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=3650)
    request_expiry_days = serializers.IntegerField(required=False, min_value=1, max_value=365)
    reauth_required = serializers.BooleanField(required=False)
    auto_deploy = serializers.BooleanField(required=False)
    questions = serializers.ListField(child=serializers.DictField(), required=False, max_length=30)


class DecisionSerializer(serializers.ModelSerializer):
    approver = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Decision
        fields = ["approver", "verdict", "comment", "created_at"]
        read_only_fields = fields


class ApprovalSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    project = serializers.SerializerMethodField()
    environment = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version = serializers.SerializerMethodField()
    requested_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    decisions = DecisionSerializer(many=True, read_only=True)
    approvals = serializers.SerializerMethodField()
    artifact_matches = serializers.SerializerMethodField()

    class Meta:
        model = ApprovalRequest
        fields = ["id", "url", "project", "environment", "model_version", "requested_by", "justification", "answers",
                  "status", "required_approvals", "approvals", "decisions", "evidence", "bound_sha256",
                  "bound_artifact_sha256", "artifact_matches", "created_at", "decided_at", "expires_at",
                  "closed_reason"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("api:approval-detail", args=[obj.uuid], request=self.context.get("request"))

    def get_project(self, obj) -> str:
        return obj.environment.project.slug

    def get_model_version(self, obj) -> dict:
        version = obj.model_version
        return {"id": str(version.uuid), "model": version.model.slug, "number": version.number}

    def get_approvals(self, obj) -> int:
        return sum(1 for d in obj.decisions.all() if d.verdict == Decision.Verdict.APPROVE)

    def get_artifact_matches(self, obj) -> bool:
        return obj.artifact_matches()


class ApprovalCreateSerializer(serializers.Serializer):
    model_version = serializers.UUIDField()
    environment = serializers.CharField(max_length=80, help_text="the environment's id or slug")
    justification = serializers.CharField(max_length=10_000)
    answers = serializers.DictField(required=False)
    validation = serializers.UUIDField(required=False, allow_null=True)


class DecisionCreateSerializer(serializers.Serializer):
    verdict = serializers.ChoiceField(choices=Decision.Verdict.choices)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    password = serializers.CharField(required=False, allow_blank=True, max_length=200, write_only=True,
                                     style={"input_type": "password"},
                                     help_text="required when the environment asks approvers to sign in again")


class EnvironmentViewSet(viewsets.GenericViewSet):
    """Environments of the caller's projects and their approval policies (admins create and change them)."""

    serializer_class = EnvironmentSerializer
    queryset = Environment.objects.none()

    def _environments(self):
        return _scoped(self.request, Environment.objects.visible_to(self.request.user).select_related("project"),
                       "project_id")

    @extend_schema(parameters=[OpenApiParameter("project", str, description="project slug")])
    def list(self, request):
        environments = self._environments()
        if request.query_params.get("project"):
            environments = environments.filter(project__slug=request.query_params["project"])
        page = self.paginate_queryset(environments.order_by("project__slug", "required_approvals", "name"))
        return self.get_paginated_response(EnvironmentSerializer(page, many=True).data)

    def retrieve(self, request, ref=None):
        return Response(EnvironmentSerializer(get_object_or_404(self._environments(), uuid=ref)).data)

    @extend_schema(request=EnvironmentWriteSerializer, responses={201: EnvironmentSerializer})
    def create(self, request):
        body = EnvironmentWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        slug, name = data.pop("project", None), data.pop("name", None)
        project = project_for(request, slug)
        environment = call_service(services.create_environment, project, actor=request.user, name=name or "", **data,
                                   denied="Only project admins manage environments.")
        return Response(EnvironmentSerializer(environment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=EnvironmentWriteSerializer, responses={200: EnvironmentSerializer})
    def partial_update(self, request, ref=None):
        environment = get_object_or_404(self._environments(), uuid=ref)
        body = EnvironmentWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        for read_only in ("project", "name"):
            if read_only in data:
                raise exceptions.ValidationError({read_only: ["This field cannot be changed."]})
        environment = call_service(services.update_environment, environment, actor=request.user, **data,
                                   denied="Only project admins manage environments.")
        return Response(EnvironmentSerializer(environment).data)


class ApprovalViewSet(viewsets.GenericViewSet):
    """Approval requests: open one for a model version and an environment, decide on it, withdraw it."""

    serializer_class = ApprovalSerializer
    queryset = ApprovalRequest.objects.none()

    def _requests(self):
        requests = ApprovalRequest.objects.visible_to(self.request.user).select_related(
            "environment__project", "model_version__model", "requested_by").prefetch_related("decisions__approver")
        return _scoped(self.request, requests, "environment__project_id")

    def _get(self, ref) -> ApprovalRequest:
        return get_object_or_404(self._requests(), uuid=ref)

    @extend_schema(parameters=[
        OpenApiParameter("project", str, description="project slug"),
        OpenApiParameter("status", str, description="pending, approved, rejected, …"),
        OpenApiParameter("waiting_for_me", bool, description="only requests the caller may decide now"),
    ])
    def list(self, request):
        requests = self._requests()
        params = request.query_params
        if params.get("project"):
            requests = requests.filter(environment__project__slug=params["project"])
        if params.get("status"):
            if params["status"] not in ApprovalRequest.Status.values:
                choices = ", ".join(ApprovalRequest.Status.values)
                raise exceptions.ValidationError({"status": [f"Choose one of {choices}."]})
            requests = requests.filter(status=params["status"])
        if params.get("waiting_for_me") in ("1", "true", "yes"):
            requests = requests.filter(pk__in=[r.pk for r in services.waiting_for(request.user)])
        page = self.paginate_queryset(requests.order_by("-created_at"))
        return self.get_paginated_response(ApprovalSerializer(page, many=True, context={"request": request}).data)

    def retrieve(self, request, ref=None):
        return Response(ApprovalSerializer(self._get(ref), context={"request": request}).data)

    @extend_schema(request=ApprovalCreateSerializer, responses={201: ApprovalSerializer})
    def create(self, request):
        body = ApprovalCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        versions = _scoped(request, ModelVersion.objects.visible_to(request.user).select_related("model__project"),
                           "model__project_id")
        version = versions.filter(uuid=data["model_version"]).first()
        if version is None:
            raise exceptions.ValidationError({"model_version": ["No such model version in your projects."]})
        environments = Environment.objects.filter(project=version.model.project)
        environment = None
        with contextlib.suppress(ValueError):
            environment = environments.filter(uuid=uuid_lib.UUID(data["environment"])).first()
        environment = environment or environments.filter(slug=data["environment"]).first()
        if environment is None:
            project_name = version.model.project.name
            raise exceptions.ValidationError({"environment": [f"{project_name} has no such environment."]})
        validation = None
        if data.get("validation"):
            validation = ModelValidation.objects.filter(uuid=data["validation"], model_version=version).first()
            if validation is None:
                raise exceptions.ValidationError({"validation": ["No such validation of this model version."]})
        approval = call_service(services.request_approval, version, environment, actor=request.user,
                                justification=data["justification"], answers=data.get("answers") or {},
                                validation=validation, denied="Your role in this project cannot request approvals.")
        return Response(ApprovalSerializer(approval, context={"request": request}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=DecisionCreateSerializer, responses={201: ApprovalSerializer})
    def decisions(self, request, ref=None):
        """An approver's decision: approve, reject or request changes (a comment is required for the last two)."""
        approval = self._get(ref)
        body = DecisionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        call_service(services.decide, approval, actor=request.user, verdict=data["verdict"],
                     comment=data.get("comment", ""), password=data.get("password"),
                     denied="You may not decide on this request.")
        return Response(ApprovalSerializer(self._get(ref), context={"request": request}).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApprovalSerializer})
    def withdraw(self, request, ref=None):
        reason = str(request.data.get("reason", ""))[:1000] if hasattr(request.data, "get") else ""
        approval = call_service(services.withdraw, self._get(ref), actor=request.user, reason=reason,
                                denied="Only the requester or a project admin can withdraw a request.")
        return Response(ApprovalSerializer(approval, context={"request": request}).data)


urlpatterns = [
    path("environments/", EnvironmentViewSet.as_view({"get": "list", "post": "create"}), name="environment-list"),
    path("environments/<uuid:ref>/", EnvironmentViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
         name="environment-detail"),
    path("approvals/", ApprovalViewSet.as_view({"get": "list", "post": "create"}), name="approval-list"),
    path("approvals/<uuid:ref>/", ApprovalViewSet.as_view({"get": "retrieve"}), name="approval-detail"),
    path("approvals/<uuid:ref>/decisions/", ApprovalViewSet.as_view({"post": "decisions"}),
         name="approval-decisions"),
    path("approvals/<uuid:ref>/withdraw/", ApprovalViewSet.as_view({"post": "withdraw"}), name="approval-withdraw"),
]
