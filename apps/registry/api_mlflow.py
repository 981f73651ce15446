"""Registry API for the MLflow tracking server: import a version by URI, browse the server, follow a model."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service, project_for
from apps.core.api import job_accepted
from apps.registry import mlflow_source
from apps.registry.api import (
    LINEAGE_FIELD_NAMES,
    MODEL_FIELD_NAMES,
    ModelSerializer,
    ModelWriteSerializer,
    get_model,
)


class MlflowImportSerializer(ModelWriteSerializer):
    project = serializers.SlugField()
    model_uri = serializers.CharField(max_length=600, help_text="models:/<name>/<version>, models:/<name>@<alias> "
                                                                "or runs:/<run id>/<path>")
    name = serializers.CharField(max_length=120, required=False, allow_blank=True,
                                 help_text="the portal model's name; default: the MLflow model's or run's name")
    version_description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    training_dataset = serializers.UUIDField(required=False, allow_null=True)
    target_column = serializers.CharField(required=False, allow_blank=True, max_length=300)
    code_repository = serializers.CharField(required=False, allow_blank=True, max_length=500)
    code_commit = serializers.CharField(required=False, allow_blank=True, max_length=64)
    params = serializers.JSONField(required=False, help_text="object; default: the run's params")
    metrics = serializers.JSONField(required=False, help_text="object of numbers; default: the run's metrics")
    requirements = serializers.JSONField(required=False, help_text="list of pins; default: the model's")
    input_example = serializers.JSONField(required=False, help_text="list of records")


class FollowSerializer(serializers.Serializer):
    mlflow_name = serializers.CharField(max_length=255, allow_blank=True,
                                        help_text="registered model on the MLflow server; \"\" stops following")


def _unavailable(exc: mlflow_source.TrackingServerUnavailable) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class MlflowImportViewSet(viewsets.GenericViewSet):
    serializer_class = MlflowImportSerializer

    @extend_schema(request=MlflowImportSerializer, responses={202: dict})
    def create(self, request):
        """Import a registered version or a run's model from the MLflow server, with its run's lineage (202)."""
        body = MlflowImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = project_for(request, data["project"])
        try:
            version = call_service(
                mlflow_source.start_mlflow_import,
                project,
                actor=request.user,
                model_uri=data["model_uri"],
                name=data.get("name") or None,
                model_fields={k: data[k] for k in MODEL_FIELD_NAMES if k in data},
                lineage={k: data[k] for k in LINEAGE_FIELD_NAMES if data.get(k) not in (None, "", {}, [])},
                description=data.get("version_description", ""),
                denied="Your role in this project cannot import models.",
            )
        except mlflow_source.TrackingServerUnavailable as exc:
            return _unavailable(exc)
        response = job_accepted(version.import_job, request)
        response.data.update({
            "model": version.model.slug,
            "version": version.number,
            "id": str(version.uuid),
            "source_uri": version.source_uri,
            "url": reverse("api:model-version-detail", args=[version.uuid], request=request),
        })
        return response


class MlflowBrowseViewSet(viewsets.GenericViewSet):
    serializer_class = serializers.Serializer

    @extend_schema(
        parameters=[OpenApiParameter("project", str, required=True, description="project slug"),
                    OpenApiParameter("search", str, description="part of a registered model's name"),
                    OpenApiParameter("page_token", str, description="next_page_token of the previous page")],
        responses={200: dict},
    )
    def list(self, request):
        """Registered models on the MLflow server with their newest versions, and which are imported here."""
        if not request.query_params.get("project"):
            raise exceptions.ValidationError({"project": ["Name the project (its slug)."]})
        project = project_for(request, request.query_params["project"])
        try:
            models, token = call_service(mlflow_source.list_server_models, request.query_params.get("search", ""),
                                         request.query_params.get("page_token") or None, project=project,
                                         denied="You may not browse this server.")
        except mlflow_source.TrackingServerUnavailable as exc:
            return _unavailable(exc)
        for model in models:
            for row in model["versions"]:
                row["created_at"] = row["created_at"].isoformat() if row["created_at"] else None
        return Response({"results": models, "next_page_token": token or None})


class FollowViewSet(viewsets.GenericViewSet):
    serializer_class = FollowSerializer

    @extend_schema(request=FollowSerializer, responses={200: ModelSerializer})
    def follow(self, request, ref=None):
        """Follow a registered model on the MLflow server: the periodic sync imports its new versions."""
        model = get_model(request, ref)
        body = FollowSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            model = call_service(mlflow_source.set_follow, model, actor=request.user,
                                 mlflow_name=body.validated_data["mlflow_name"],
                                 denied="Your role in this project cannot import models.")
        except mlflow_source.TrackingServerUnavailable as exc:
            return _unavailable(exc)
        return Response(ModelSerializer(model, context={"request": request}).data)


urlpatterns = [
    path("models/import-mlflow/", MlflowImportViewSet.as_view({"post": "create"}), name="model-import-mlflow"),
    path("mlflow/models/", MlflowBrowseViewSet.as_view({"get": "list"}), name="mlflow-models"),
    path("models/<str:ref>/follow/", FollowViewSet.as_view({"post": "follow", "patch": "follow"}),
         name="model-follow"),
]
