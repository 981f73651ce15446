"""Registry API: models, their versions, import from a file, metadata edits, archive/restore and trust."""

from __future__ import annotations

import contextlib
import uuid as uuid_lib

from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, parsers, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service, project_for
from apps.core.api import job_accepted
from apps.datasets.services import upload_too_large
from apps.registry import compare, services
from apps.registry.models import ModelVersion, RegisteredModel


class VersionSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    trusted_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    training_dataset = serializers.SerializerMethodField()
    converted_from = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)
    code_repository = serializers.CharField(read_only=True)  # may be blank: not always a URL
    job = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "id", "url", "model", "number", "status", "description", "format", "flavor", "source_uri",
            "original_filename", "size_bytes", "sha256", "artifact_sha256", "mlflow_model_uri", "mlflow_run_id",
            "signature", "input_example", "training_dataset", "code_repository", "code_commit", "params", "metrics",
            "requirements", "mlflow_tags", "aliases", "tags", "safety", "trusted_by", "trusted_at", "converted_from",
            "explainability", "optimisation", "error", "job", "created_by", "created_at",
        ]
        read_only_fields = fields

    def get_training_dataset(self, version) -> dict | None:
        dataset_version = version.training_dataset
        if dataset_version is None:
            return None
        return {"id": str(dataset_version.uuid), "dataset": str(dataset_version.dataset.uuid),
                "name": dataset_version.dataset.name, "number": dataset_version.number,
                "target_column": (version.tags or {}).get("target_column", "")}

    def get_job(self, version) -> dict | None:
        job = version.import_job
        if job is None:
            return None
        return {"id": str(job.id), "status": job.status, "progress": job.progress, "message": job.message}

    def get_url(self, version) -> str:
        return reverse("api:model-version-detail", args=[version.uuid], request=self.context.get("request"))


class VersionUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    aliases = serializers.ListField(child=serializers.CharField(max_length=40), required=False, max_length=50)
    tags = serializers.DictField(child=serializers.CharField(max_length=500, allow_blank=True), required=False)
    code_repository = serializers.CharField(required=False, allow_blank=True, max_length=500)
    code_commit = serializers.CharField(required=False, allow_blank=True, max_length=64)
    params = serializers.DictField(required=False)
    metrics = serializers.DictField(required=False)


class ReexamineSerializer(serializers.Serializer):
    training_dataset = serializers.UUIDField(required=False, allow_null=True)
    target_column = serializers.CharField(required=False, allow_blank=True, max_length=300)
    input_example = serializers.JSONField(required=False)


class ModelSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    latest_version = serializers.SerializerMethodField()
    versions_url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "id", "slug", "name", "project", "description", "intended_use", "out_of_scope_uses", "owner",
            "task_type", "risk_tier", "tags", "follow_mlflow_name", "latest_version", "versions_url",
            "created_by", "created_at", "updated_at",
        ]
        read_only_fields = fields

    def get_latest_version(self, model) -> dict | None:
        versions = sorted(model.versions.all(), key=lambda v: -v.number)
        if not versions:
            return None
        return {"number": versions[0].number, "status": versions[0].status, "id": str(versions[0].uuid)}

    def get_versions_url(self, model) -> str:
        return reverse("api:model-versions", args=[model.slug], request=self.context.get("request"))


class ModelWriteSerializer(serializers.Serializer):
    project = serializers.SlugField(required=False)
    name = serializers.CharField(max_length=120, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    intended_use = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    out_of_scope_uses = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    owner = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=150)
    task_type = serializers.ChoiceField(choices=RegisteredModel.TaskType.choices, required=False)
    risk_tier = serializers.ChoiceField(choices=RegisteredModel.RiskTier.choices, required=False)
    tags = serializers.DictField(child=serializers.CharField(max_length=500, allow_blank=True), required=False)


class ImportSerializer(ModelWriteSerializer):
    project = serializers.SlugField()
    name = serializers.CharField(max_length=120)
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=ModelVersion.Format.choices, required=False,
                                     help_text="mlflow_server is for import-mlflow/, not for files")
    version_description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)
    training_dataset = serializers.UUIDField(required=False, allow_null=True)
    target_column = serializers.CharField(required=False, allow_blank=True, max_length=300)
    code_repository = serializers.CharField(required=False, allow_blank=True, max_length=500)
    code_commit = serializers.CharField(required=False, allow_blank=True, max_length=64)
    params = serializers.CharField(required=False, allow_blank=True, help_text="JSON object")
    metrics = serializers.CharField(required=False, allow_blank=True, help_text="JSON object of numbers")
    requirements = serializers.CharField(required=False, allow_blank=True, help_text="one pin per line")
    input_example = serializers.CharField(required=False, allow_blank=True, help_text="JSON list of records")


MODEL_FIELD_NAMES = ("description", "intended_use", "out_of_scope_uses", "owner", "task_type", "risk_tier", "tags")
LINEAGE_FIELD_NAMES = ("training_dataset", "target_column", "code_repository", "code_commit", "params", "metrics",
                       "requirements", "input_example")


def visible_models(request):
    models = RegisteredModel.objects.visible_to(request.user).select_related("project", "owner", "created_by")
    scoped = getattr(request.auth, "project_id", None)
    return models.filter(project_id=scoped) if scoped else models


def visible_versions(request):
    versions = ModelVersion.objects.visible_to(request.user).select_related(
        "model__project", "created_by", "trusted_by", "training_dataset__dataset", "import_job", "converted_from"
    )
    scoped = getattr(request.auth, "project_id", None)
    return versions.filter(model__project_id=scoped) if scoped else versions


def get_model(request, ref: str) -> RegisteredModel:
    lookup = Q(slug=ref)
    with contextlib.suppress(ValueError):
        lookup |= Q(uuid=uuid_lib.UUID(ref))
    return get_object_or_404(visible_models(request), lookup)


def get_version(request, ref) -> ModelVersion:
    return get_object_or_404(visible_versions(request), uuid=ref)


class ModelViewSet(viewsets.GenericViewSet):
    """Registered models of the caller's projects (newest versions summarised)."""

    serializer_class = ModelSerializer
    queryset = RegisteredModel.objects.none()

    @extend_schema(parameters=[OpenApiParameter("project", str, description="project slug")])
    def list(self, request):
        models = visible_models(request).prefetch_related("versions")
        if request.query_params.get("project"):
            models = models.filter(project__slug=request.query_params["project"])
        page = self.paginate_queryset(models.order_by("name"))
        return self.get_paginated_response(ModelSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=ModelWriteSerializer, responses={201: ModelSerializer})
    def create(self, request):
        body = ModelWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if not data.get("project"):
            raise exceptions.ValidationError({"project": ["Name the project (its slug)."]})
        if not data.get("name"):
            raise exceptions.ValidationError({"name": ["Give the model a name."]})
        project = project_for(request, data.pop("project"))
        model = call_service(services.create_model, project, actor=request.user, name=data.pop("name"),
                             denied="Your role in this project cannot register models.", **data)
        return Response(ModelSerializer(model, context={"request": request}).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ref=None):
        return Response(ModelSerializer(get_model(request, ref), context={"request": request}).data)

    @extend_schema(request=ModelWriteSerializer, responses={200: ModelSerializer})
    def partial_update(self, request, ref=None):
        model = get_model(request, ref)
        body = ModelWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        for read_only in ("project", "name"):
            if read_only in data:
                raise exceptions.ValidationError({read_only: ["This field cannot be changed."]})
        model = call_service(services.update_model, model, actor=request.user,
                             denied="Your role cannot edit models.", **data)
        return Response(ModelSerializer(model, context={"request": request}).data)

    @extend_schema(responses={200: VersionSerializer(many=True)})
    def versions(self, request, ref=None):
        """The model's versions, newest first."""
        model = get_model(request, ref)
        versions = visible_versions(request).filter(model=model).order_by("-number")
        if request.query_params.get("status"):
            versions = versions.filter(status=request.query_params["status"])
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(VersionSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        parameters=[OpenApiParameter("versions", str, description="version numbers, comma-separated (2 or more)")],
        responses={200: dict},
    )
    def compare(self, request, ref=None):
        """Side by side: metrics, params, signature and lineage differences of two or more versions."""
        model = get_model(request, ref)
        numbers = compare.parse_numbers(request.query_params.get("versions", ""))
        return Response(call_service(compare.compare_versions, model, numbers, user=request.user,
                                     denied="You may not compare these versions."))


class ImportViewSet(viewsets.GenericViewSet):
    serializer_class = ImportSerializer
    parser_classes = [parsers.MultiPartParser, parsers.FormParser]

    @extend_schema(request={"multipart/form-data": ImportSerializer}, responses={202: dict})
    def create(self, request):
        """Upload a model file: creates the model if new, the next version, and an import job (202)."""
        if too_large := upload_too_large(request):
            return Response({"detail": too_large, "errors": {"file": [too_large]}},
                            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        body = ImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        project = project_for(request, data["project"])
        version = call_service(
            services.start_import,
            project,
            actor=request.user,
            name=data["name"],
            uploaded=data["file"],
            fmt=data.get("format"),
            model_fields={k: data[k] for k in MODEL_FIELD_NAMES if k in data},
            lineage={k: data[k] for k in LINEAGE_FIELD_NAMES if data.get(k) not in (None, "")},
            description=data.get("version_description", ""),
            denied="Your role in this project cannot import models.",
        )
        response = job_accepted(version.import_job, request)
        response.data.update({
            "model": version.model.slug,
            "version": version.number,
            "id": str(version.uuid),
            "url": reverse("api:model-version-detail", args=[version.uuid], request=request),
        })
        return response


class VersionViewSet(viewsets.GenericViewSet):
    """One model version: read it, edit its labels and lineage text, archive/restore, trust (admins)."""

    serializer_class = VersionSerializer
    queryset = ModelVersion.objects.none()

    def retrieve(self, request, ref=None):
        return Response(VersionSerializer(get_version(request, ref), context={"request": request}).data)

    @extend_schema(request=VersionUpdateSerializer, responses={200: VersionSerializer})
    def partial_update(self, request, ref=None):
        version = get_version(request, ref)
        allowed = set(VersionUpdateSerializer().fields)
        read_only = sorted(set(request.data) - allowed) if hasattr(request.data, "keys") else []
        if read_only:
            raise exceptions.ValidationError({name: ["This field is read-only."] for name in read_only})
        body = VersionUpdateSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        version = call_service(services.update_version, version, actor=request.user,
                               denied="Your role cannot edit model versions.", **body.validated_data)
        return Response(VersionSerializer(version, context={"request": request}).data)

    @extend_schema(request=None, responses={200: VersionSerializer})
    def archive(self, request, ref=None):
        version = call_service(services.archive_version, get_version(request, ref), actor=request.user,
                               denied="Only project admins can archive versions.")
        return Response(VersionSerializer(version, context={"request": request}).data)

    @extend_schema(request=None, responses={200: VersionSerializer})
    def restore(self, request, ref=None):
        version = call_service(services.restore_version, get_version(request, ref), actor=request.user,
                               denied="Only project admins can restore versions.")
        return Response(VersionSerializer(version, context={"request": request}).data)

    @extend_schema(request=ReexamineSerializer, responses={202: dict})
    def reexamine(self, request, ref=None):
        """Import a quarantined or failed version again, optionally after linking training data or an example."""
        body = ReexamineSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        lineage = {k: v for k, v in body.validated_data.items() if v not in (None, "")}
        version = call_service(services.reexamine_version, get_version(request, ref), actor=request.user,
                               lineage=lineage,
                               denied="Your role in this project cannot import models.")
        response = job_accepted(version.import_job, request)
        response.data.update({"id": str(version.uuid),
                              "url": reverse("api:model-version-detail", args=[version.uuid], request=request)})
        return response

    @extend_schema(request=None, responses={202: dict})
    def trust(self, request, ref=None):
        """A project admin other than the uploader trusts this exact quarantined file (pinned by SHA-256)."""
        comment = str(request.data.get("comment", ""))[:1000] if hasattr(request.data, "get") else ""
        version = call_service(services.trust_version, get_version(request, ref), actor=request.user, comment=comment,
                               denied="Only project admins can trust quarantined files.")
        response = job_accepted(version.import_job, request)
        response.data.update({"id": str(version.uuid),
                              "url": reverse("api:model-version-detail", args=[version.uuid], request=request)})
        return response


_REF = "<str:ref>"
urlpatterns = [
    path("models/", ModelViewSet.as_view({"get": "list", "post": "create"}), name="model-list"),
    path("models/import/", ImportViewSet.as_view({"post": "create"}), name="model-import"),
    path(f"models/{_REF}/", ModelViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
         name="model-detail"),
    path(f"models/{_REF}/versions/", ModelViewSet.as_view({"get": "versions"}), name="model-versions"),
    path(f"models/{_REF}/compare/", ModelViewSet.as_view({"get": "compare"}), name="model-compare"),
    path("model-versions/<uuid:ref>/", VersionViewSet.as_view({"get": "retrieve", "patch": "partial_update"}),
         name="model-version-detail"),
    *[
        path(f"model-versions/<uuid:ref>/{verb}/", VersionViewSet.as_view({"post": verb}), name=f"model-version-{verb}")
        for verb in ("archive", "restore", "trust", "reexamine")
    ],
]
