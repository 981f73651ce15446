"""Alerting API: alert rules (CRUD) and alerts (list, read, acknowledge / snooze / assign). The rules and the
permission checks are in alerts.py; these views translate HTTP to its calls."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service
from apps.accounts.models import User
from apps.accounts.permissions import Action, can, token_allows
from apps.deployments.models import Deployment
from apps.monitoring import alerts, metrics
from apps.monitoring.models import Alert, AlertRule


def _scoped(request, queryset, project_path: str):
    scoped = getattr(request.auth, "project_id", None)
    return queryset.filter(**{project_path: scoped}) if scoped else queryset


# --- Rules -----------------------------------------------------------------------------------------------------


class AlertRuleSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    deployment = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    metric_label = serializers.SerializerMethodField()
    # Not `format: uri`: blank when the rule has none, and only the scheme and host ("https://host/…") for callers
    # who may not manage alerts.
    webhook_url = serializers.CharField(read_only=True, help_text="blank when none; masked for non-managers")
    webhook_secret = serializers.SerializerMethodField(help_text="\"set\" when the rule has a secret, else \"\"")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    open_alert = serializers.SerializerMethodField()

    class Meta:
        model = AlertRule
        fields = ["id", "url", "deployment", "name", "metric", "metric_label", "comparator", "threshold",
                  "window_minutes", "min_samples", "severity", "notify_in_app", "notify_email", "webhook_url",
                  "webhook_secret", "action", "enabled", "is_default", "created_by", "created_at", "updated_at",
                  "last_evaluated_at", "last_value", "open_alert"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("api:alert-rule-detail", args=[obj.uuid], request=self.context.get("request"))

    def get_metric_label(self, obj) -> str:
        info = metrics.METRICS.get(obj.metric)
        return info.label if info else obj.metric

    def to_representation(self, obj):
        data = super().to_representation(obj)
        request = self.context.get("request")
        if data["webhook_url"] and request is not None and not can(request.user, Action.MANAGE_ALERTS, obj):
            # Many webhook URLs are credentials themselves (chat incoming hooks): only who manages rules sees them.
            parts = urlsplit(data["webhook_url"])
            data["webhook_url"] = f"{parts.scheme}://{parts.hostname}/…"
        return data

    def get_webhook_secret(self, obj) -> str:
        return "set" if obj.webhook_secret else ""

    def get_open_alert(self, obj) -> str | None:
        open_ids = self.context.get("open_alerts")
        if open_ids is not None:
            return open_ids.get(obj.pk)
        alert = obj.alerts.filter(status__in=alerts.UNRESOLVED).first()
        return str(alert.uuid) if alert else None


class AlertRuleWriteSerializer(serializers.Serializer):
    """What a client may set; everything else on a rule is read-only."""

    name = serializers.CharField(max_length=120)
    metric = serializers.ChoiceField(choices=list(metrics.METRICS), help_text="a key of the monitoring metrics")
    comparator = serializers.ChoiceField(choices=AlertRule.Comparator.choices, required=False)
    threshold = serializers.FloatField(help_text="shares as fractions (0.05 = 5 %), latency in ms, PSI unitless")
    window_minutes = serializers.IntegerField(required=False, help_text="5 to 43200 (30 days)")
    min_samples = serializers.IntegerField(required=False, help_text="at least 1")
    severity = serializers.ChoiceField(choices=AlertRule.Severity.choices, required=False)
    notify_in_app = serializers.BooleanField(required=False)
    notify_email = serializers.BooleanField(required=False)
    webhook_url = serializers.CharField(required=False, allow_blank=True, max_length=500)
    webhook_secret = serializers.CharField(required=False, allow_blank=True, max_length=128, write_only=True,
                                           trim_whitespace=False)
    action = serializers.ChoiceField(choices=AlertRule.Action.choices, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)


class AlertRuleCreateSerializer(AlertRuleWriteSerializer):
    deployment = serializers.SlugField(help_text="the deployment's slug")


def _reject_unknown(data, allowed) -> None:
    if not hasattr(data, "keys"):
        raise exceptions.ValidationError({"non_field_errors": ["Send a JSON object."]})
    unknown = sorted(set(data.keys()) - set(allowed))
    if unknown:
        raise exceptions.ValidationError({key: ["This field cannot be set."] for key in unknown})


RULE_PARAMETERS = [OpenApiParameter("deployment", str, description="deployment slug")]


class AlertRuleViewSet(viewsets.GenericViewSet):
    """Alert rules: what to watch on a deployment, and whom to tell."""

    serializer_class = AlertRuleSerializer
    queryset = AlertRule.objects.none()
    lookup_field = "uuid"

    def _rules(self):
        rules = AlertRule.objects.visible_to(self.request.user).select_related("deployment__project", "created_by")
        return _scoped(self.request, rules, "deployment__project_id")

    def _get(self, uuid) -> AlertRule:
        return get_object_or_404(self._rules(), uuid=uuid)

    def _out(self, rule: AlertRule, code=status.HTTP_200_OK) -> Response:
        return Response(AlertRuleSerializer(self._get(rule.uuid), context={"request": self.request}).data,
                        status=code)

    @extend_schema(parameters=RULE_PARAMETERS)
    def list(self, request):
        rules = self._rules()
        if request.query_params.get("deployment"):
            rules = rules.filter(deployment__slug=request.query_params["deployment"])
        page = self.paginate_queryset(rules.order_by("deployment__slug", "name"))
        open_ids = dict(Alert.objects.filter(rule__in=[r.pk for r in page], status__in=alerts.UNRESOLVED)
                        .values_list("rule_id", "uuid"))
        context = {"request": request, "open_alerts": {k: str(v) for k, v in open_ids.items()}}
        return self.get_paginated_response(AlertRuleSerializer(page, many=True, context=context).data)

    def retrieve(self, request, uuid=None):
        return self._out(self._get(uuid))

    @extend_schema(request=AlertRuleCreateSerializer, responses={201: AlertRuleSerializer})
    def create(self, request):
        _reject_unknown(request.data, AlertRuleCreateSerializer().fields)
        body = AlertRuleCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        slug = data.pop("deployment")
        deployment = Deployment.objects.visible_to(request.user).filter(slug=slug).select_related("project").first()
        if deployment is None or not token_allows(request.auth, deployment):
            raise exceptions.ValidationError({"deployment": ["No such deployment, or you are not a member of its "
                                                             "project."]})
        rule = call_service(alerts.create_rule, deployment, actor=request.user, **data,
                            denied="Your role in this project cannot manage alert rules.")
        return self._out(rule, status.HTTP_201_CREATED)

    @extend_schema(request=AlertRuleWriteSerializer, responses={200: AlertRuleSerializer})
    def partial_update(self, request, uuid=None):
        rule = self._get(uuid)
        if not can(request.user, Action.MANAGE_ALERTS, rule):
            raise exceptions.PermissionDenied("Your role in this project cannot manage alert rules.")
        _reject_unknown(request.data, AlertRuleWriteSerializer().fields)
        body = AlertRuleWriteSerializer(data=request.data, partial=request.method == "PATCH")
        body.is_valid(raise_exception=True)
        rule = call_service(alerts.update_rule, rule, actor=request.user, **body.validated_data,
                            denied="Your role in this project cannot manage alert rules.")
        return self._out(rule)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request, uuid=None):
        rule = self._get(uuid)
        call_service(alerts.delete_rule, rule, actor=request.user,
                     denied="Your role in this project cannot manage alert rules.")
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Alerts ----------------------------------------------------------------------------------------------------


class AlertSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    rule = serializers.SerializerMethodField()
    deployment = serializers.SerializerMethodField()
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    acknowledged_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    retraining = serializers.SerializerMethodField()

    class Meta:
        model = Alert
        fields = ["id", "url", "page_url", "rule", "deployment", "status", "severity", "title", "what_happened",
                  "why_it_matters", "what_to_do", "link", "value", "worst_value", "samples", "details", "owner",
                  "acknowledged_by", "acknowledged_at", "snoozed_until", "opened_at", "updated_at", "resolved_at",
                  "retraining"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("api:alert-detail", args=[obj.uuid], request=self.context.get("request"))

    def get_page_url(self, obj) -> str:
        request = self.context.get("request")
        path_ = alerts.alert_url(obj)
        return request.build_absolute_uri(path_) if request else path_

    def get_rule(self, obj) -> dict:
        return {"id": str(obj.rule.uuid), "name": obj.rule.name, "metric": obj.rule.metric,
                "threshold": obj.rule.threshold, "comparator": obj.rule.comparator}

    def get_deployment(self, obj) -> dict:
        deployment = obj.rule.deployment
        return {"slug": deployment.slug, "name": deployment.name, "project": deployment.project.slug}

    def get_retraining(self, obj) -> str | None:
        return str(obj.retraining.uuid) if obj.retraining_id else None


class AlertUpdateSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[Alert.Status.ACKNOWLEDGED, Alert.Status.SNOOZED], required=False)
    snoozed_until = serializers.DateTimeField(required=False, help_text="with status snoozed (or snooze_hours)")
    snooze_hours = serializers.FloatField(required=False, min_value=0.01, max_value=alerts.MAX_SNOOZE_HOURS)
    owner = serializers.CharField(required=False, allow_blank=True, allow_null=True,
                                  help_text="a project member's username; null or \"\" clears it")


ALERT_PARAMETERS = [
    OpenApiParameter("deployment", str, description="deployment slug"),
    OpenApiParameter("project", str, description="project slug"),
    OpenApiParameter("status", str, description="open, acknowledged, snoozed, resolved, or unresolved"),
    OpenApiParameter("severity", str, description="info, warning or critical"),
]


def alert_filters(queryset, params):
    """The alert list's filters, shared by the API and the page."""
    errors = {}
    if params.get("deployment"):
        queryset = queryset.filter(rule__deployment__slug=params["deployment"])
    if params.get("project"):
        queryset = queryset.filter(rule__deployment__project__slug=params["project"])
    wanted = params.get("status")
    if wanted == "unresolved":
        queryset = queryset.filter(status__in=alerts.UNRESOLVED)
    elif wanted:
        if wanted not in Alert.Status.values:
            errors["status"] = [f"Choose one of {', '.join(Alert.Status.values)} or unresolved."]
        else:
            queryset = queryset.filter(status=wanted)
    if params.get("severity"):
        if params["severity"] not in AlertRule.Severity.values:
            errors["severity"] = [f"Choose one of {', '.join(AlertRule.Severity.values)}."]
        else:
            queryset = queryset.filter(severity=params["severity"])
    if errors:
        raise exceptions.ValidationError(errors)
    return queryset


class AlertViewSet(viewsets.GenericViewSet):
    """Alerts: what happened, why it matters, what to do; acknowledge, snooze or assign them."""

    serializer_class = AlertSerializer
    queryset = Alert.objects.none()
    lookup_field = "uuid"

    def _alerts(self):
        found = Alert.objects.visible_to(self.request.user).select_related(
            "rule__deployment__project", "owner", "acknowledged_by", "retraining")
        return _scoped(self.request, found, "rule__deployment__project_id")

    def _get(self, uuid) -> Alert:
        return get_object_or_404(self._alerts(), uuid=uuid)

    @extend_schema(parameters=ALERT_PARAMETERS)
    def list(self, request):
        page = self.paginate_queryset(alert_filters(self._alerts(), request.query_params))
        return self.get_paginated_response(AlertSerializer(page, many=True, context={"request": request}).data)

    def retrieve(self, request, uuid=None):
        return Response(AlertSerializer(self._get(uuid), context={"request": request}).data)

    @extend_schema(request=AlertUpdateSerializer, responses={200: AlertSerializer})
    def partial_update(self, request, uuid=None):
        """Acknowledge ({"status": "acknowledged"}), snooze ({"status": "snoozed", "snoozed_until"} or
        "snooze_hours"), or assign ({"owner": "<username>"}). Everything else is read-only."""
        alert = self._get(uuid)
        if not can(request.user, Action.RESPOND_ALERTS, alert):
            raise exceptions.PermissionDenied("Your role in this project cannot respond to alerts.")
        _reject_unknown(request.data, AlertUpdateSerializer().fields)
        body = AlertUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        denied = "Your role in this project cannot respond to alerts."
        if "owner" in data:
            owner = None
            if data["owner"]:
                owner = User.objects.filter(username=data["owner"]).first()
                if owner is None:
                    raise exceptions.ValidationError({"owner": ["No such user in this project."]})
            call_service(alerts.assign, alert, actor=request.user, owner=owner, denied=denied)
        if data.get("status") == Alert.Status.ACKNOWLEDGED:
            call_service(alerts.acknowledge, alert, actor=request.user, denied=denied)
        elif data.get("status") == Alert.Status.SNOOZED or "snoozed_until" in data or "snooze_hours" in data:
            call_service(alerts.snooze, alert, actor=request.user, until=data.get("snoozed_until"),
                         hours=data.get("snooze_hours"), denied=denied)
        return Response(AlertSerializer(self._get(uuid), context={"request": request}).data)


_rules = AlertRuleViewSet.as_view({"get": "list", "post": "create"})
_rule = AlertRuleViewSet.as_view({"get": "retrieve", "patch": "partial_update", "put": "partial_update",
                                  "delete": "destroy"})

urlpatterns = [
    path("alert-rules/", _rules, name="alert-rule-list"),
    path("alert-rules/<uuid:uuid>/", _rule, name="alert-rule-detail"),
    path("alerts/", AlertViewSet.as_view({"get": "list"}), name="alert-list"),
    path("alerts/<uuid:uuid>/", AlertViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
         name="alert-detail"),
]
