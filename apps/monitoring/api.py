"""Monitoring API: ground truth, metric time series, drift and a deployment's monitoring settings.

    POST/GET /api/v1/deployments/<slug>/feedback/   labels (one object, a list, or a CSV file) / the labels sent
    GET      /api/v1/deployments/<slug>/metrics/    ?metric=&from=&to=&bucket=&feature=  (no metric: the summary)
    GET      /api/v1/deployments/<slug>/drift/      ?from=&to=  every feature's drift against the reference
    GET/PATCH /api/v1/deployments/<slug>/monitoring/ reference dataset, value per prediction, retraining options
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, parsers, serializers
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import Action, can, token_allows
from apps.core.parsers import JSONParser
from apps.datasets.models import DatasetVersion
from apps.deployments.models import Deployment
from apps.monitoring import metrics, services
from apps.monitoring.models import GroundTruth

MAX_RANGE = dt.timedelta(days=400)
DEFAULT_RANGE = dt.timedelta(days=1)


def deployment_for(request, slug: str) -> Deployment:
    """The deployment if the caller (and their token) may see it; else 404, as for any outsider."""
    deployment = get_object_or_404(
        Deployment.objects.visible_to(request.user).select_related("project", "environment", "champion__model",
                                                                   "champion__training_dataset"), slug=slug)
    if not token_allows(request.auth, deployment):
        raise exceptions.NotFound()
    return deployment


def as_api_error(exc: DjangoValidationError) -> exceptions.ValidationError:
    return exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors":
                                                                                           exc.messages})


def parse_moment(value: str | None, field: str) -> dt.datetime | None:
    """An ISO date or date-time (UTC when no zone is given), or a 400 naming the parameter."""
    if value in (None, ""):
        return None
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        moment = dt.datetime(day.year, day.month, day.day) if day else None
    if moment is None:
        raise exceptions.ValidationError({field: [f"Use an ISO date or date-time, e.g. 2026-11-20 or "
                                                  f"2026-11-20T09:00:00Z (got “{value[:40]}”)."]})
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)


def time_range(params) -> tuple[dt.datetime, dt.datetime]:
    end = parse_moment(params.get("to"), "to") or timezone.now()
    start = parse_moment(params.get("from"), "from") or end - DEFAULT_RANGE
    if start >= end:
        raise exceptions.ValidationError({"from": ["`from` must be before `to`."]})
    if end - start > MAX_RANGE:
        raise exceptions.ValidationError({"from": [f"At most {MAX_RANGE.days} days per request."]})
    return start, end


def _number(value):
    return None if value is None else round(float(value), 6)


# --- Feedback -------------------------------------------------------------------------------------------------


class GroundTruthSerializer(serializers.ModelSerializer):
    model_version = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    correct = serializers.SerializerMethodField()

    class Meta:
        model = GroundTruth
        fields = ["request_id", "row", "label", "prediction", "correct", "model_version", "predicted_at", "source",
                  "created_by", "created_at"]
        read_only_fields = fields

    def get_model_version(self, row: GroundTruth) -> int | None:
        return row.model_version.number if row.model_version_id else None

    def get_correct(self, row: GroundTruth) -> bool | None:
        from apps.monitoring.performance import normalise_label

        if row.prediction is None or isinstance(row.prediction, list | dict):
            return None
        return normalise_label(row.label) == normalise_label(row.prediction)


FEEDBACK_ITEM = inline_serializer("FeedbackItem", {
    "request_id": serializers.CharField(help_text="The X-Request-ID the invocations endpoint answered with."),
    "row": serializers.IntegerField(required=False, help_text="The row within the request, from 0 (default 0)."),
    "label": serializers.JSONField(help_text="The true outcome: a number, true/false or a text."),
})
FEEDBACK_RESULT = inline_serializer("FeedbackResult", {
    "received": serializers.IntegerField(), "matched": serializers.IntegerField(),
    "pending": serializers.IntegerField(help_text="Not matched to a logged prediction yet (retried for 7 days)."),
    "corrected": serializers.IntegerField(help_text="Rows that had a label already, now replaced."),
})


class FeedbackView(ListAPIView):
    """Ground truth for logged predictions. POST one `{"request_id", "label", "row"}` object, a list of them (up to
    10,000), `{"items": [...]}`, or a CSV file (`file`, columns request_id, label and optionally row). All or
    nothing: a bad item refuses the call, naming the item and field. GET lists the labels sent, newest first."""

    serializer_class = GroundTruthSerializer
    parser_classes = [JSONParser, parsers.MultiPartParser, parsers.FormParser]

    def get_queryset(self):
        deployment = deployment_for(self.request, self.kwargs["slug"])
        rows = GroundTruth.objects.filter(deployment=deployment).select_related("model_version", "created_by")
        request_id = self.request.query_params.get("request_id")
        if request_id:
            rows = rows.filter(request_id=request_id[:64])
        return rows.order_by("-created_at", "-id")

    @extend_schema(request={"application/json": FEEDBACK_ITEM, "multipart/form-data": OpenApiTypes.BINARY},
                   responses={201: FEEDBACK_RESULT, 400: OpenApiResponse(description="a bad item, named"),
                              403: OpenApiResponse(description="scientists and admins send labels")})
    def post(self, request, slug):
        deployment = deployment_for(request, slug)
        if not can(request.user, Action.SEND_FEEDBACK, deployment):
            raise exceptions.PermissionDenied("Only the project's scientists and admins send ground truth.")
        try:
            if "file" in request.FILES:
                items, source = services.parse_feedback_csv(request.FILES["file"]), "csv"
            else:
                data = request.data
                items = data.get("items") if isinstance(data, dict) and "items" in data else data
                if hasattr(items, "dict") and not isinstance(items, dict | list):  # a form post without a file
                    items = items.dict()
                source = "api"
            result = services.record_feedback(deployment, actor=request.user, items=items, source=source)
        except DjangoValidationError as exc:
            raise as_api_error(exc) from None
        return Response(result.as_dict(), status=201)


# --- Metrics --------------------------------------------------------------------------------------------------


class MetricsView(APIView):
    """A metric over time from the rollups: `?metric=error_rate&from=2026-11-20&to=2026-11-21&bucket=1h`.
    Without `metric`: the window's summary and the list of metrics. Shares are fractions (0.05 = 5 %)."""

    @extend_schema(parameters=[
        OpenApiParameter("metric", str, enum=list(metrics.METRICS), required=False),
        OpenApiParameter("from", OpenApiTypes.DATETIME, description="default: 24 hours before `to`"),
        OpenApiParameter("to", OpenApiTypes.DATETIME, description="default: now"),
        OpenApiParameter("bucket", str, enum=["5m", "1h", "1d"], description="default: chosen from the range"),
        OpenApiParameter("feature", str, description="for missing_share, out_of_range_share and drift_psi")],
        responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug):
        deployment = deployment_for(request, slug)
        start, end = time_range(request.query_params)
        metric = request.query_params.get("metric") or ""
        bucket = request.query_params.get("bucket") or None
        if bucket is not None and bucket not in ("5m", "1h", "1d"):
            raise exceptions.ValidationError({"bucket": ["Use 5m, 1h or 1d."]})
        if bucket and (end - start) / {"5m": dt.timedelta(minutes=5), "1h": dt.timedelta(hours=1),
                                       "1d": dt.timedelta(days=1)}[bucket] > 5000:
            raise exceptions.ValidationError({"bucket": ["Too many buckets for this range: choose a larger one."]})
        window = {"from": start, "to": end}
        if not metric:
            summary = {k: (_number(v) if isinstance(v, float) else v)
                       for k, v in metrics.summary(deployment, start=start, end=end).items()}
            return Response({"deployment": deployment.slug, **window, "summary": summary,
                             "metrics": {key: {"label": info.label, "unit": info.unit, "group": info.group,
                                               "higher_is_better": info.higher_is_better,
                                               "description": info.description}
                                         for key, info in metrics.METRICS.items()}})
        if metric not in metrics.METRICS:
            raise exceptions.ValidationError({"metric": [f"Unknown metric “{metric[:40]}”: use one of "
                                                         f"{', '.join(metrics.METRICS)}."]})
        feature = request.query_params.get("feature") or None
        if feature and metric not in metrics.FEATURE_METRICS:
            raise exceptions.ValidationError({"feature": [f"{metric} is not a per-feature metric."]})
        series = metrics.series(deployment, metric, start=start, end=end, bucket=bucket, feature=feature)
        info = metrics.METRICS[metric]
        return Response({"deployment": deployment.slug, "metric": metric, "label": info.label, "unit": info.unit,
                         "bucket": series.bucket, **window, "feature": feature,
                         "points": [{"time": moment, "value": _number(value), "samples": samples}
                                    for moment, value, samples in series.points]})


class DriftView(APIView):
    """Every feature's drift over the window (`?from=&to=`, default the last 24 hours) against the reference:
    PSI, the test (KS or chi-square), its p-value, the verdict, and the shares per bin, worst first."""

    @extend_schema(parameters=[OpenApiParameter("from", OpenApiTypes.DATETIME),
                               OpenApiParameter("to", OpenApiTypes.DATETIME)],
                   responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug):
        deployment = deployment_for(request, slug)
        start, end = time_range(request.query_params)
        report = metrics.drift_report(deployment, start=start, end=end)
        return Response({"deployment": deployment.slug, "from": start, "to": end, **report})


# --- Settings -------------------------------------------------------------------------------------------------


class MonitoringSettingsSerializer(serializers.Serializer):
    reference_dataset = serializers.UUIDField(allow_null=True, required=False,
                                              help_text="A dataset version's id; null: the training dataset.")
    value_per_prediction = serializers.DecimalField(max_digits=12, decimal_places=4, allow_null=True,
                                                    required=False, min_value=0)
    value_unit = serializers.CharField(max_length=16, required=False, allow_blank=True)
    retrain_with_feedback = serializers.BooleanField(required=False)
    retrain_feedback_days = serializers.IntegerField(min_value=0, max_value=3650, required=False)
    retrain_every_days = serializers.IntegerField(min_value=0, max_value=365, required=False)


def _settings_body(deployment) -> dict:
    current = services.settings_for(deployment)
    dataset = current.reference_dataset
    return {"deployment": deployment.slug,
            "reference_dataset": str(dataset.uuid) if dataset else None,
            "reference_dataset_name": str(dataset) if dataset else None,
            "value_per_prediction": str(current.value_per_prediction) if current.value_per_prediction is not None
            else None,
            "value_unit": current.value_unit, "retrain_with_feedback": current.retrain_with_feedback,
            "retrain_feedback_days": current.retrain_feedback_days,
            "retrain_every_days": current.retrain_every_days}


class MonitoringSettingsView(APIView):
    """A deployment's monitoring settings (PATCH: project scientists and admins; audited)."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request, slug):
        return Response(_settings_body(deployment_for(request, slug)))

    @extend_schema(request=MonitoringSettingsSerializer, responses={200: OpenApiTypes.OBJECT})
    def patch(self, request, slug):
        deployment = deployment_for(request, slug)
        if not can(request.user, Action.MANAGE_ALERTS, deployment):
            raise exceptions.PermissionDenied("Only the project's scientists and admins change monitoring settings.")
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Send a JSON object of settings."]})
        unknown = set(request.data) - set(MonitoringSettingsSerializer().fields)
        if unknown:
            raise exceptions.ValidationError({name: ["Not a monitoring setting (read-only or unknown)."]
                                              for name in sorted(unknown)})
        serializer = MonitoringSettingsSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        if "reference_dataset" in fields and fields["reference_dataset"] is not None:
            found = DatasetVersion.objects.filter(uuid=fields["reference_dataset"],
                                                  dataset__project=deployment.project).first()
            if found is None:
                raise exceptions.ValidationError({"reference_dataset": ["No such dataset version in this project."]})
            fields["reference_dataset"] = found
        try:
            services.update_settings(deployment, actor=request.user, **fields)
        except DjangoValidationError as exc:
            raise as_api_error(exc) from None
        return Response(_settings_body(deployment))


urlpatterns = [
    path("deployments/<slug:slug>/feedback/", FeedbackView.as_view(), name="deployment-feedback"),
    path("deployments/<slug:slug>/metrics/", MetricsView.as_view(), name="deployment-metrics"),
    path("deployments/<slug:slug>/drift/", DriftView.as_view(), name="deployment-drift"),
    path("deployments/<slug:slug>/monitoring/", MonitoringSettingsView.as_view(), name="deployment-monitoring"),
]
