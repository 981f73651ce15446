"""Batch scoring API: start a run (multipart `file` or `{"dataset_version"}`), list runs, one run, its scored file."""

from __future__ import annotations

import contextlib
import uuid as uuid_lib

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, parsers, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service
from apps.accounts.permissions import Action, require
from apps.core import storage
from apps.core.api import job_accepted
from apps.core.parsers import JSONParser
from apps.datasets.services import upload_too_large
from apps.deployments import batch
from apps.deployments.models import BatchRun, Deployment


class BatchRunSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    url = serializers.SerializerMethodField()
    result_url = serializers.SerializerMethodField()
    deployment = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    model_version = serializers.SerializerMethodField()
    source = serializers.SerializerMethodField()
    status = serializers.CharField(source="job.status", read_only=True)
    progress = serializers.IntegerField(source="job.progress", read_only=True)
    message = serializers.CharField(source="job.message", read_only=True)
    error = serializers.CharField(source="job.error", read_only=True)
    job = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = BatchRun
        fields = ["id", "url", "deployment", "model_version", "source", "request_id", "status", "progress", "message",
                  "error", "row_count", "chunk_count", "chunks_done", "result_url", "job", "created_by", "created_at"]
        read_only_fields = fields

    def _request(self):
        return self.context.get("request")

    def get_url(self, obj) -> str:
        return reverse("api:deployment-batch-detail", args=[obj.deployment.slug, obj.uuid], request=self._request())

    def get_result_url(self, obj) -> str | None:
        if not obj.result_file:
            return None
        return reverse("api:deployment-batch-result", args=[obj.deployment.slug, obj.uuid], request=self._request())

    def get_model_version(self, obj) -> dict:
        version = obj.model_version
        return {"id": str(version.uuid), "model": version.model.slug, "number": version.number}

    def get_source(self, obj) -> dict:
        if obj.dataset_version_id:
            return {"kind": "dataset_version", "name": obj.source_name,
                    "dataset_version": str(obj.dataset_version.uuid)}
        return {"kind": "file", "name": obj.source_name}

    def get_job(self, obj) -> dict:
        return {"id": str(obj.job.id), "status": obj.job.status, "progress": obj.job.progress,
                "url": reverse("api:job-detail", args=[obj.job.id], request=self._request())}


class BatchStartSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="CSV, TSV, Parquet or Excel (.xlsx) with a header row")
    dataset_version = serializers.CharField(required=False, help_text="id of a ready dataset version of the project")
    keep_extra_columns = serializers.BooleanField(
        required=False, default=False,
        help_text="carry columns the model does not take (ids, labels) into the result; refused otherwise")

    def validate(self, attrs):
        if ("file" in attrs) == ("dataset_version" in attrs):
            raise serializers.ValidationError({"file": ["Send a file or a dataset_version (one of the two)."]})
        return attrs


class BatchViewSet(viewsets.GenericViewSet):
    """Batch scoring of a deployment: a file or a dataset version scored by its champion in a background job."""

    serializer_class = BatchRunSerializer
    queryset = BatchRun.objects.none()
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, JSONParser]

    def _deployment(self, slug) -> Deployment:
        deployments = Deployment.objects.visible_to(self.request.user).select_related("project", "champion__model")
        scoped = getattr(self.request.auth, "project_id", None)
        if scoped:
            deployments = deployments.filter(project_id=scoped)
        deployment = get_object_or_404(deployments, slug=slug)
        try:
            require(self.request.user, Action.PREDICT, deployment)
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Your role in this project cannot score with this deployment.") from None
        return deployment

    def _runs(self, deployment: Deployment):
        return deployment.batch_runs.select_related("deployment", "model_version__model", "dataset_version", "job",
                                                    "created_by")

    def _run(self, slug, run_id) -> BatchRun:
        return get_object_or_404(self._runs(self._deployment(slug)), uuid=run_id)

    @extend_schema(responses={200: BatchRunSerializer(many=True)})
    def list(self, request, slug=None):
        """The deployment's batch runs, newest first."""
        page = self.paginate_queryset(self._runs(self._deployment(slug)))
        return self.get_paginated_response(BatchRunSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request={"multipart/form-data": BatchStartSerializer, "application/json": BatchStartSerializer},
                   responses={202: dict})
    def create(self, request, slug=None):
        """Start scoring: 202 with the job to watch and the run; the result is at the run's result_url when done."""
        deployment = self._deployment(slug)
        if too_large := upload_too_large(request):
            return Response({"detail": too_large, "errors": {"file": [too_large]}},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        body = BatchStartSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        version = None
        if "dataset_version" in data:
            with contextlib.suppress(ValueError):
                version = batch.dataset_versions_for(deployment).filter(
                    uuid=uuid_lib.UUID(str(data["dataset_version"]))).first()
            if version is None:
                raise exceptions.ValidationError({"dataset_version": [
                    "No such dataset version in this project, or it is not ready (profiling must finish first)."]})
        try:
            run = call_service(batch.start_batch, deployment, actor=request.user, uploaded=data.get("file"),
                               dataset_version=version, keep_extra_columns=data["keep_extra_columns"],
                               denied="Your role in this project cannot score with this deployment.")
        except batch.BatchRefused as exc:
            return Response({"detail": str(exc), "errors": {"deployment": [str(exc)]}}, status=status.HTTP_409_CONFLICT)
        run = self._run(slug, run.uuid)
        response = job_accepted(run.job, request)
        response.data["batch"] = BatchRunSerializer(run, context={"request": request}).data
        return response

    @extend_schema(responses={200: BatchRunSerializer})
    def retrieve(self, request, slug=None, run=None):
        return Response(BatchRunSerializer(self._run(slug, run), context={"request": request}).data)

    @extend_schema(responses={(200, "text/csv"): bytes})
    def result(self, request, slug=None, run=None):
        """The scored file (CSV): the input columns, the prediction column(s), request_id and row. 404 until done."""
        run = self._run(slug, run)
        if reason := result_missing(run):
            raise exceptions.NotFound(reason)
        return result_response(run)


def result_missing(run: BatchRun) -> str | None:
    """Why there is no scored file to download yet, or None."""
    if run.result_file:
        return None
    if run.job.status == run.job.Status.FAILED:
        return f"This batch failed, so there is no scored file: {run.job.error}"
    return f"The scored file is not ready yet ({run.job.progress}% done)."


def result_response(run: BatchRun) -> FileResponse:
    """The scored CSV as a download (shared with the page)."""
    return FileResponse(storage.open_stream(run.result_file), as_attachment=True, content_type="text/csv",
                        filename=f"{run.deployment.slug}-batch-{run.request_id[:12]}.csv")


urlpatterns = [
    path("deployments/<slug:slug>/batch/", BatchViewSet.as_view({"get": "list", "post": "create"}),
         name="deployment-batch-list"),
    path("deployments/<slug:slug>/batch/<uuid:run>/", BatchViewSet.as_view({"get": "retrieve"}),
         name="deployment-batch-detail"),
    path("deployments/<slug:slug>/batch/<uuid:run>/result/", BatchViewSet.as_view({"get": "result"}),
         name="deployment-batch-result"),
]
