"""Retraining API: start a run for a deployment (202 with its job), list a deployment's runs, read one run."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service
from apps.accounts.permissions import Action, require
from apps.core.api import job_accepted
from apps.monitoring import retraining
from apps.monitoring.api import deployment_for
from apps.monitoring.models import RetrainingRun


def _version(version, request) -> dict | None:
    if version is None:
        return None
    return {"id": str(version.uuid), "model": version.model.slug, "number": version.number, "status": version.status,
            "url": reverse("api:model-version-detail", args=[version.uuid], request=request)}


class RetrainingRunSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    deployment = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    base_version = serializers.SerializerMethodField()
    new_version = serializers.SerializerMethodField()
    approval = serializers.SerializerMethodField()
    job = serializers.SerializerMethodField()
    alert = serializers.SlugRelatedField(slug_field="uuid", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = RetrainingRun
        fields = ["id", "url", "deployment", "status", "trigger", "alert", "base_version", "new_version", "approval",
                  "job", "comparison", "error", "created_by", "created_at", "finished_at"]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        return reverse("api:retraining-run-detail", args=[obj.uuid], request=self.context.get("request"))

    def get_base_version(self, obj) -> dict:
        return _version(obj.base_version, self.context.get("request"))

    def get_new_version(self, obj) -> dict | None:
        return _version(obj.new_version, self.context.get("request"))

    def get_approval(self, obj) -> dict | None:
        if obj.approval is None:
            return None
        return {"id": str(obj.approval.uuid), "status": obj.approval.status,
                "environment": obj.approval.environment.slug,
                "url": reverse("api:approval-detail", args=[obj.approval.uuid], request=self.context.get("request"))}

    def get_job(self, obj) -> dict | None:
        if obj.job is None:
            return None
        return {"id": str(obj.job.id), "status": obj.job.status, "progress": obj.job.progress,
                "message": obj.job.message,
                "url": reverse("api:job-detail", args=[obj.job.id], request=self.context.get("request"))}


class RetrainingViewSet(viewsets.GenericViewSet):
    """Closed-loop retraining of a deployment's scikit-learn champion; each run ends in a new version and an
    approval request (nothing is deployed without people deciding)."""

    serializer_class = RetrainingRunSerializer
    queryset = RetrainingRun.objects.none()

    def _runs(self):
        runs = RetrainingRun.objects.visible_to(self.request.user).select_related(
            "deployment", "job", "alert", "created_by", "base_version__model", "new_version__model",
            "approval__environment")
        scoped = getattr(self.request.auth, "project_id", None)
        return runs.filter(deployment__project_id=scoped) if scoped else runs

    def _out(self, run: RetrainingRun) -> dict:
        run = self._runs().get(pk=run.pk)
        return RetrainingRunSerializer(run, context={"request": self.request}).data

    @extend_schema(request=None, responses={202: dict, 409: dict})
    def start(self, request, slug=None):
        """Start retraining the champion: 202 with the run and its job (the run already under way, if there is one);
        409 with the reason when the champion cannot be refitted here."""
        deployment = deployment_for(self.request, slug)
        call_service(require, request.user, Action.RETRAIN, deployment,
                     denied="Your role in this project cannot start retraining.")
        try:
            run = retraining.start_retraining(deployment, actor=request.user, trigger="manual")
        except DjangoValidationError as exc:
            reason = " ".join(exc.messages)
            return Response({"detail": reason, "errors": {"deployment": exc.messages}},
                            status=status.HTTP_409_CONFLICT)
        response = job_accepted(run.job, request)
        response.data.update(run=str(run.uuid), already_running=run.existing, retraining_run=self._out(run))
        if run.existing:
            response.data["detail"] = "A retraining run of this deployment is already under way: this is it."
        return response

    @extend_schema(responses={200: RetrainingRunSerializer(many=True)})
    def list(self, request, slug=None):
        """The deployment's retraining runs, newest first."""
        deployment = deployment_for(self.request, slug)
        page = self.paginate_queryset(self._runs().filter(deployment=deployment))
        return self.get_paginated_response(RetrainingRunSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(responses={200: RetrainingRunSerializer})
    def retrieve(self, request, ref=None):
        run = get_object_or_404(self._runs(), uuid=ref)
        return Response(RetrainingRunSerializer(run, context={"request": request}).data)


urlpatterns = [
    path("deployments/<slug:slug>/retrain/", RetrainingViewSet.as_view({"post": "start"}), name="deployment-retrain"),
    path("deployments/<slug:slug>/retraining-runs/", RetrainingViewSet.as_view({"get": "list"}),
         name="deployment-retraining-runs"),
    path("retraining-runs/<uuid:ref>/", RetrainingViewSet.as_view({"get": "retrieve"}), name="retraining-run-detail"),
]
