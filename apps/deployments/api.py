"""Deployments API: deploy, change, roll back, tokens, the prediction log; and the invocations endpoint.

The invocations endpoint is a plain Django view, not DRF: it is the hot path, and it speaks MLflow's
protocol (serving.invoke does the work). Everything else is DRF like the rest of the API.
"""

from __future__ import annotations

import contextlib
import uuid as uuid_lib

from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service, project_for
from apps.accounts.permissions import Action, can
from apps.approvals.models import Environment
from apps.core.models import bulky_fields
from apps.deployments import services, serving
from apps.deployments.models import Deployment, DeploymentEvent, DeploymentToken, PredictionLog
from apps.registry.models import ModelVersion


def _version_ref(version: ModelVersion | None) -> dict | None:
    if version is None:
        return None
    return {"id": str(version.uuid), "model": version.model.slug, "number": version.number}


class DeploymentSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    invocations_url = serializers.SerializerMethodField()
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    environment = serializers.SerializerMethodField()
    champion = serializers.SerializerMethodField()
    fallback = serializers.SerializerMethodField()
    challenger = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    # Blank when there is no challenger; the schema must say so (a read-only model field would not).
    challenger_mode = serializers.ChoiceField(choices=Deployment.ChallengerMode.choices, allow_blank=True,
                                              read_only=True)
    effective_max_rows = serializers.IntegerField(read_only=True)
    effective_rate_limit_per_minute = serializers.IntegerField(source="effective_rate_limit", read_only=True)

    class Meta:
        model = Deployment
        fields = ["id", "url", "invocations_url", "project", "name", "slug", "description", "environment", "status",
                  "champion", "fallback", "challenger", "challenger_mode", "challenger_share", "max_rows",
                  "effective_max_rows", "rate_limit_per_minute", "effective_rate_limit_per_minute", "generation",
                  "created_by", "created_at", "updated_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("api:deployment-detail", args=[obj.slug], request=self.context.get("request"))

    def get_invocations_url(self, obj) -> str:
        return reverse("api:deployment-invocations", args=[obj.slug], request=self.context.get("request"))

    def get_environment(self, obj) -> dict:
        return {"slug": obj.environment.slug, "name": obj.environment.name, "gated": obj.environment.gated}

    def get_champion(self, obj) -> dict:
        return _version_ref(obj.champion)

    def get_fallback(self, obj) -> dict | None:
        return _version_ref(obj.fallback)

    def get_challenger(self, obj) -> dict | None:
        return _version_ref(obj.challenger)


class DeploymentCreateSerializer(serializers.Serializer):
    project = serializers.SlugField()
    name = serializers.CharField(max_length=120)
    environment = serializers.CharField(max_length=80, help_text="the environment's id or slug")
    model_version = serializers.UUIDField()
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)


class DeploymentUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    model_version = serializers.UUIDField(required=False, help_text="a new champion (the current one becomes fallback)")
    challenger = serializers.UUIDField(required=False, allow_null=True, help_text="null removes the challenger")
    challenger_mode = serializers.ChoiceField(choices=Deployment.ChallengerMode.choices, required=False)
    challenger_share = serializers.IntegerField(required=False, min_value=0, max_value=100)
    max_rows = serializers.IntegerField(required=False, min_value=0)
    rate_limit_per_minute = serializers.IntegerField(required=False, min_value=0)
    status = serializers.ChoiceField(choices=Deployment.Status.choices, required=False)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class EventSerializer(serializers.ModelSerializer):
    champion = serializers.SerializerMethodField()
    previous_champion = serializers.SerializerMethodField()
    challenger = serializers.SerializerMethodField()
    actor = serializers.SerializerMethodField()

    class Meta:
        model = DeploymentEvent
        fields = ["kind", "champion", "previous_champion", "challenger", "actor", "reason", "details", "created_at"]
        read_only_fields = fields

    def get_champion(self, obj) -> dict:
        return _version_ref(obj.champion)

    def get_previous_champion(self, obj) -> dict | None:
        return _version_ref(obj.previous_champion)

    def get_challenger(self, obj) -> dict | None:
        return _version_ref(obj.challenger)

    def get_actor(self, obj) -> str:
        return obj.actor.username if obj.actor else (obj.actor_label or "system")


class TokenSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.CharField(read_only=True)

    class Meta:
        model = DeploymentToken
        fields = ["id", "name", "key_hint", "status", "created_by", "created_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class TokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


# A record id that reverse() accepts and str.replace() then swaps for each real one: one URL lookup per page.
RECORD_SENTINEL = "00000000-0000-0000-0000-000000000000"


class PredictionSerializer(serializers.ModelSerializer):
    """One log record. Inputs, outputs and the error text (it may quote an input) can hold personal data: they
    are null, with `data_hidden` true, unless the context's `show_data` says the caller has Action.VIEW_PII."""

    id = serializers.UUIDField(source="record_id", read_only=True)
    url = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()
    data_hidden = serializers.SerializerMethodField()
    error = serializers.CharField(read_only=True, allow_null=True)  # null when the data is hidden (see above)

    class Meta:
        model = PredictionLog
        fields = ["id", "url", "request_id", "role", "source", "model_version", "created_at", "latency_ms",
                  "status_code", "caller", "row_count", "data_hidden", "inputs", "outputs", "error"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        slug = self.context["deployment"].slug if "deployment" in self.context else obj.deployment.slug
        # One reverse() per deployment and response, not per record (50 a page).
        templates = self.context.setdefault("_url_templates", {})
        if slug not in templates:
            templates[slug] = reverse("api:deployment-prediction-detail", args=[slug, RECORD_SENTINEL],
                                      request=self.context.get("request"))
        return templates[slug].replace(RECORD_SENTINEL, str(obj.record_id))

    def get_model_version(self, obj) -> dict | None:
        return _version_ref(obj.model_version)

    def get_data_hidden(self, obj) -> bool:
        return not self.context.get("show_data", False)

    def to_representation(self, obj):
        data = super().to_representation(obj)
        if data["data_hidden"]:
            data["inputs"] = data["outputs"] = None
            data["error"] = None
        return data


def _scoped(request, queryset, project_path: str = "project_id"):
    scoped = getattr(request.auth, "project_id", None)
    return queryset.filter(**{project_path: scoped}) if scoped else queryset


def _conflict(exc: services.NotDeployable, field: str = "model_version") -> Response:
    return Response({"detail": str(exc), "errors": {field: [str(exc)]}}, status=status.HTTP_409_CONFLICT)


def _version_in(project, ref, field: str) -> ModelVersion:
    version = ModelVersion.objects.filter(uuid=ref, model__project=project).select_related("model").first()
    if version is None:
        raise exceptions.ValidationError({field: ["No such model version in this project."]})
    return version


PREDICTION_FILTER_PARAMETERS = [
    OpenApiParameter("status", str, description="ok, error or an HTTP status code"),
    OpenApiParameter("role", str, description="champion, canary or shadow"),
    OpenApiParameter("source", str, description="online or batch"),
    OpenApiParameter("version", int, description="model version number"),
    OpenApiParameter("request_id", str),
    OpenApiParameter("from", str, description="date or ISO time (inclusive)"),
    OpenApiParameter("to", str, description="date or ISO time (exclusive)"),
]


def prediction_filters(queryset, params):
    """The prediction log's filters, shared by the API and the page: status, role, version, request id, time."""
    from django.utils.dateparse import parse_date, parse_datetime

    errors = {}
    if params.get("status"):
        if params["status"] == "error":
            queryset = queryset.exclude(status_code=200)
        elif params["status"] == "ok":
            queryset = queryset.filter(status_code=200)
        elif params["status"].isdigit():
            queryset = queryset.filter(status_code=int(params["status"]))
        else:
            errors["status"] = ["Use ok, error or an HTTP status code."]
    if params.get("role"):
        if params["role"] not in PredictionLog.Role.values:
            errors["role"] = [f"Choose one of {', '.join(PredictionLog.Role.values)}."]
        else:
            queryset = queryset.filter(role=params["role"])
    if params.get("source"):
        if params["source"] not in PredictionLog.Source.values:
            errors["source"] = [f"Choose one of {', '.join(PredictionLog.Source.values)}."]
        else:
            queryset = queryset.filter(source=params["source"])
    if params.get("version"):
        if not str(params["version"]).isdigit():
            errors["version"] = ["Give the version number."]
        else:
            queryset = queryset.filter(model_version__number=int(params["version"]))
    if params.get("request_id"):
        queryset = queryset.filter(request_id=params["request_id"].strip())
    for name, lookup in (("from", "created_at__gte"), ("to", "created_at__lt")):
        if params.get(name):
            value = parse_datetime(params[name]) or parse_date(params[name])
            if value is None:
                errors[name] = ["Use a date (YYYY-MM-DD) or an ISO 8601 time."]
            else:
                queryset = queryset.filter(**{lookup: value})
    if errors:
        raise exceptions.ValidationError(errors)
    return queryset


class DeploymentViewSet(viewsets.GenericViewSet):
    """Deployments: an approved model version behind the invocations endpoint, its challenger and fallback."""

    serializer_class = DeploymentSerializer
    queryset = Deployment.objects.none()

    def _deployments(self):
        deployments = Deployment.objects.visible_to(self.request.user).select_related(
            "project", "environment", "champion__model", "fallback__model", "challenger__model", "created_by").defer(
            *bulky_fields(ModelVersion, "champion", "fallback", "challenger"))
        return _scoped(self.request, deployments)

    def _get(self, slug) -> Deployment:
        return get_object_or_404(self._deployments(), slug=slug)

    def _out(self, deployment: Deployment, code=status.HTTP_200_OK) -> Response:
        deployment = self._get(deployment.slug)
        return Response(DeploymentSerializer(deployment, context={"request": self.request}).data, status=code)

    @extend_schema(parameters=[OpenApiParameter("project", str, description="project slug"),
                               OpenApiParameter("environment", str, description="environment slug"),
                               OpenApiParameter("status", str, description="active or stopped")])
    def list(self, request):
        deployments = self._deployments()
        params = request.query_params
        if params.get("project"):
            deployments = deployments.filter(project__slug=params["project"])
        if params.get("environment"):
            deployments = deployments.filter(environment__slug=params["environment"])
        if params.get("status"):
            if params["status"] not in Deployment.Status.values:
                raise exceptions.ValidationError({"status": ["Choose active or stopped."]})
            deployments = deployments.filter(status=params["status"])
        page = self.paginate_queryset(deployments.order_by("project__slug", "name"))
        return self.get_paginated_response(DeploymentSerializer(page, many=True, context={"request": request}).data)

    def retrieve(self, request, slug=None):
        return Response(DeploymentSerializer(self._get(slug), context={"request": request}).data)

    @extend_schema(request=DeploymentCreateSerializer, responses={201: DeploymentSerializer})
    def create(self, request):
        """Deploy: refused with 409 (and the reason) unless the version is approved for the environment."""
        body = DeploymentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = project_for(request, data["project"])
        if not can(request.user, Action.DEPLOY, project):
            raise exceptions.PermissionDenied("Your role in this project cannot deploy.")
        environments = Environment.objects.filter(project=project)
        environment = None
        with contextlib.suppress(ValueError):
            environment = environments.filter(uuid=uuid_lib.UUID(data["environment"])).first()
        environment = environment or environments.filter(slug=data["environment"]).first()
        if environment is None:
            raise exceptions.ValidationError({"environment": [f"{project.name} has no such environment."]})
        version = _version_in(project, data["model_version"], "model_version")
        try:
            deployment = call_service(services.deploy, project, actor=request.user, name=data["name"],
                                      environment=environment, version=version,
                                      description=data.get("description", ""),
                                      denied="Your role in this project cannot deploy.")
        except services.NotDeployable as exc:
            return _conflict(exc)
        return self._out(deployment, status.HTTP_201_CREATED)

    @extend_schema(request=DeploymentUpdateSerializer, responses={200: DeploymentSerializer})
    def partial_update(self, request, slug=None):
        """Promote a new champion, set or remove a challenger, change limits, stop or resume."""
        deployment = self._get(slug)
        if not can(request.user, Action.DEPLOY, deployment):  # before anything: an empty PATCH was a viewer's 200
            raise exceptions.PermissionDenied("Your role in this project cannot change deployments.")
        body = DeploymentUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        denied = "Your role in this project cannot change deployments."
        reason = data.pop("reason", "")
        try:
            if "model_version" in data:
                version = _version_in(deployment.project, data.pop("model_version"), "model_version")
                deployment = call_service(services.promote, deployment, version, actor=request.user, reason=reason,
                                          denied=denied)
            if "challenger" in data:
                ref = data.pop("challenger")
                version = _version_in(deployment.project, ref, "challenger") if ref else None
                deployment = call_service(services.set_challenger, deployment, version, actor=request.user,
                                          mode=data.pop("challenger_mode", ""), share=data.pop("challenger_share", 0),
                                          denied=denied)
            if "status" in data:
                deployment = call_service(services.set_status, deployment, actor=request.user,
                                          active=data.pop("status") == Deployment.Status.ACTIVE, reason=reason,
                                          denied=denied)
            if data:
                deployment = call_service(services.update, deployment, actor=request.user, **data, denied=denied)
        except services.NotDeployable as exc:
            return _conflict(exc, "challenger" if "challenger" in request.data else "model_version")
        return self._out(deployment)

    @extend_schema(request=ReasonSerializer, responses={200: DeploymentSerializer})
    def rollback(self, request, slug=None):
        """Switch to the fallback version at once (the reason goes into the audit trail)."""
        deployment = self._get(slug)
        body = ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            deployment = call_service(services.rollback, deployment, actor=request.user,
                                      reason=body.validated_data["reason"],
                                      denied="Your role in this project cannot roll back deployments.")
        except services.NotDeployable as exc:
            return _conflict(exc, "fallback")
        return self._out(deployment)

    @extend_schema(responses={200: EventSerializer(many=True)})
    def history(self, request, slug=None):
        """Every change, newest first: deploys, new champions, rollbacks, challengers, settings."""
        deployment = self._get(slug)
        events = deployment.events.select_related("champion__model", "previous_champion__model",
                                                  "challenger__model", "actor").defer(
            *bulky_fields(ModelVersion, "champion", "previous_champion", "challenger"))
        page = self.paginate_queryset(events)
        return self.get_paginated_response(EventSerializer(page, many=True).data)

    @extend_schema(responses={200: TokenSerializer(many=True)})
    def tokens(self, request, slug=None):
        deployment = self._get(slug)
        if request.method == "POST":
            body = TokenCreateSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            token, key = call_service(services.create_token, deployment, actor=request.user,
                                      name=body.validated_data["name"],
                                      expires_at=body.validated_data.get("expires_at"),
                                      denied="Your role in this project cannot create deployment tokens.")
            return Response({**TokenSerializer(token).data, "key": key}, status=status.HTTP_201_CREATED)
        if not can(request.user, Action.DEPLOY, deployment):
            raise exceptions.PermissionDenied("Your role in this project cannot see deployment tokens.")
        page = self.paginate_queryset(deployment.tokens.select_related("created_by"))
        return self.get_paginated_response(TokenSerializer(page, many=True).data)

    @extend_schema(request=None, responses={200: TokenSerializer})
    def revoke_token(self, request, slug=None, token=None):
        deployment = self._get(slug)
        instance = get_object_or_404(deployment.tokens, uuid=token)
        call_service(services.revoke_token, instance, actor=request.user,
                     denied="Your role in this project cannot revoke deployment tokens.")
        instance.refresh_from_db()
        return Response(TokenSerializer(instance).data)

    @extend_schema(parameters=PREDICTION_FILTER_PARAMETERS, responses={200: PredictionSerializer(many=True)})
    def predictions(self, request, slug=None):
        """What the deployment served, newest first (written by the log drain every few seconds). Inputs, outputs
        and errors are null for roles that may not see personal data (viewers)."""
        deployment = self._get(slug)
        logs = prediction_filters(deployment.predictions.select_related("model_version__model").defer(
            *bulky_fields(ModelVersion, "model_version")), request.query_params)
        page = self.paginate_queryset(logs)
        context = {"request": request, "deployment": deployment,
                   "show_data": can(request.user, Action.VIEW_PII, deployment)}
        return self.get_paginated_response(PredictionSerializer(page, many=True, context=context).data)


@csrf_exempt
def invocations(request, slug: str):
    """MLflow's scoring protocol: POST a dataframe_split / dataframe_records / instances / inputs body or a CSV."""
    if request.method != "POST":
        response = JsonResponse({"detail": "Use POST with a JSON or CSV body."}, status=405)
        response["Allow"] = "POST"
        return response
    answer = serving.invoke(request, slug)
    if answer.status == 200:
        response = HttpResponse(answer.content, content_type="application/json")
    else:
        response = JsonResponse(answer.body, status=answer.status)
    if answer.request_id:
        response["X-Request-ID"] = answer.request_id
    for name, value in answer.headers.items():
        response[name.replace("_", "-")] = value
    return response


_deployments = DeploymentViewSet.as_view({"get": "list", "post": "create"})
_deployment = DeploymentViewSet.as_view({"get": "retrieve", "patch": "partial_update"})

core_urlpatterns = [
    path("deployments/", _deployments, name="deployment-list"),
    path("deployments/<slug:slug>/", _deployment, name="deployment-detail"),
    path("deployments/<slug:slug>/invocations", invocations, name="deployment-invocations"),
    path("deployments/<slug:slug>/invocations/", invocations),
    path("deployments/<slug:slug>/rollback/", DeploymentViewSet.as_view({"post": "rollback"}),
         name="deployment-rollback"),
    path("deployments/<slug:slug>/history/", DeploymentViewSet.as_view({"get": "history"}),
         name="deployment-history"),
    path("deployments/<slug:slug>/tokens/", DeploymentViewSet.as_view({"get": "tokens", "post": "tokens"}),
         name="deployment-tokens"),
    path("deployments/<slug:slug>/tokens/<uuid:token>/revoke/", DeploymentViewSet.as_view({"post": "revoke_token"}),
         name="deployment-token-revoke"),
    path("deployments/<slug:slug>/predictions/", DeploymentViewSet.as_view({"get": "predictions"}),
         name="deployment-predictions"),
]
