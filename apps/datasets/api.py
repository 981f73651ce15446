"""Datasets API: upload (creates a version and a profiling job), versions with their profile, rows, PII."""

from __future__ import annotations

import uuid

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, parsers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import service_errors
from apps.accounts.models import Project
from apps.accounts.permissions import Action, can, require, token_allows
from apps.core.api import job_accepted
from apps.core.parsers import JSONParser
from apps.datasets import services
from apps.datasets.grid import GridQueryError
from apps.datasets.models import Dataset, DatasetVersion, redact_profile
from apps.datasets.views import grid_params, read_version_rows


class VersionSummarySerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)

    class Meta:
        model = DatasetVersion
        fields = [
            "number",
            "status",
            "original_filename",
            "format",
            "size_bytes",
            "sha256",
            "encrypted",
            "row_count",
            "column_count",
            "description",
            "created_by",
            "created_at",
            "parent",
            "error",
        ]
        read_only_fields = fields


class VersionDetailSerializer(VersionSummarySerializer):
    schema = serializers.SerializerMethodField()
    profile = serializers.SerializerMethodField()
    pii = serializers.SerializerMethodField()
    hidden_columns = serializers.SerializerMethodField()
    revealed_columns = serializers.ListField(read_only=True)
    job = serializers.SerializerMethodField()
    transformation = serializers.JSONField(read_only=True)

    class Meta(VersionSummarySerializer.Meta):
        fields = [
            *VersionSummarySerializer.Meta.fields,
            "schema",
            "profile",
            "pii",
            "hidden_columns",
            "revealed_columns",
            "transformation",
            "job",
        ]
        read_only_fields = fields

    def _hidden(self, version) -> set[str]:
        return version.hidden_columns_for(self.context["request"].user)

    def get_schema(self, version) -> list:
        return version.schema

    def get_profile(self, version) -> dict | None:
        return redact_profile(version.profile, self._hidden(version))

    def get_pii(self, version) -> list:
        return [{"column": c["name"], **c["pii"]} for c in (version.profile or {}).get("columns", []) if c.get("pii")]

    def get_hidden_columns(self, version) -> list:
        return sorted(self._hidden(version))

    def get_job(self, version) -> dict | None:
        job = version.profile_job
        if job is None:
            return None
        return {
            "id": str(job.id),
            "status": job.status,
            "progress": job.progress,
            "url": reverse("api:job-detail", args=[job.id], request=self.context.get("request")),
        }


def _uuid_or_404(value) -> uuid.UUID:
    """A dataset named by something that is not a UUID does not exist (404), like any unknown one."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404 from None


class DatasetSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    versions = VersionSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "project", "name", "description", "created_by", "created_at", "versions"]
        read_only_fields = fields


class UploadSerializer(serializers.Serializer):
    project = serializers.SlugField(help_text="project slug")
    name = serializers.CharField(max_length=120, help_text="dataset name; an existing name gets a new version")
    file = serializers.FileField(help_text="CSV, TSV, Parquet or .xlsx with a header row")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class DatasetViewSet(viewsets.GenericViewSet):
    """Datasets of the caller's projects. `POST` uploads a file (multipart) as a new version and profiles it."""

    serializer_class = DatasetSerializer
    lookup_field = "uuid"
    # The portal's JSON parser: DRF's own lets a deeply nested body overflow the stack (a 500).
    parser_classes = [parsers.MultiPartParser, parsers.FormParser, JSONParser]

    def get_queryset(self):
        datasets = Dataset.objects.visible_to(self.request.user).select_related("project", "created_by")
        scoped = getattr(self.request.auth, "project_id", None)
        if scoped:
            datasets = datasets.filter(project_id=scoped)
        if self.request.query_params.get("project"):
            datasets = datasets.filter(project__slug=self.request.query_params["project"])
        return datasets.prefetch_related("versions__created_by", "versions__parent").order_by("name")

    def _dataset(self, uuid) -> Dataset:
        return get_object_or_404(self.get_queryset(), uuid=_uuid_or_404(uuid))

    @extend_schema(parameters=[OpenApiParameter("project", str, description="project slug")])
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DatasetSerializer(page, many=True).data)

    def retrieve(self, request, uuid=None):
        return Response(DatasetSerializer(self._dataset(uuid)).data)

    @extend_schema(request={"multipart/form-data": UploadSerializer}, responses={202: dict, 200: dict})
    def create(self, request):
        if too_large := services.upload_too_large(request):
            return Response(
                {"detail": too_large, "errors": {"file": [too_large]}}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
            )
        body = UploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        project = Project.objects.filter(slug=body.validated_data["project"]).first()
        if (
            project is None
            or not token_allows(request.auth, project)
            or not can(request.user, Action.VIEW_PROJECT, project)
        ):
            raise exceptions.ValidationError({"project": ["No such project, or you are not a member of it."]})
        try:
            require(request.user, Action.UPLOAD_DATA, project)
            version, created = services.upload(project, actor=request.user, name=body.validated_data["name"],
                                               uploaded=body.validated_data["file"],
                                               description=body.validated_data["description"])
            dataset = version.dataset
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Your role in this project cannot upload data.") from None
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        version_url = reverse("api:dataset-version-detail", args=[dataset.uuid, version.number], request=request)
        if not created:
            return Response(
                {
                    "detail": f"This file is identical to {dataset.name} v{version.number}; "
                    "no new version was created.",
                    "dataset": str(dataset.uuid),
                    "version": version.number,
                    "url": version_url,
                    "duplicate": True,
                },
                status=status.HTTP_200_OK,
            )
        response = job_accepted(version.profile_job, request)
        response.data.update({"dataset": str(dataset.uuid), "version": version.number, "url": version_url})
        return response

    @extend_schema(
        parameters=[
            OpenApiParameter("base", int, description="version number to compare from"),
            OpenApiParameter("other", int, description="version number to compare to"),
        ],
        responses={200: dict},
    )
    @action(detail=True, methods=["get"])
    def compare(self, request, uuid=None):
        """Schema changes and per-column shift (PSI) between two profiled versions, as a validation report."""
        dataset = self._dataset(uuid)
        versions = {}
        for field in ("base", "other"):
            raw = request.query_params.get(field, "")
            version = dataset.versions.filter(number=int(raw)).first() if raw.isdigit() else None
            if version is None or version.status != DatasetVersion.Status.READY:
                raise exceptions.ValidationError({field: [f"Give the number of a profiled version of {dataset.name}."]})
            versions[field] = version
        report = services.compare_versions(versions["base"], versions["other"], user=request.user)
        return Response({"base": versions["base"].number, "other": versions["other"].number, **report.as_dict()})

    def destroy(self, request, uuid=None):
        dataset = self._dataset(uuid)
        try:
            services.delete_dataset(dataset, actor=request.user)
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Only project admins can delete datasets.") from None
        except DjangoValidationError as exc:
            return Response({"detail": exc.messages[0], "errors": exc.message_dict}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetVersionViewSet(viewsets.GenericViewSet):
    """Versions of one dataset, their profile (PII columns redacted for viewers) and their rows."""

    serializer_class = VersionDetailSerializer
    lookup_field = "number"
    lookup_value_regex = r"\d+"

    def _dataset(self) -> Dataset:
        dataset = get_object_or_404(Dataset.objects.select_related("project"),
                                    uuid=_uuid_or_404(self.kwargs["dataset_uuid"]))
        if not token_allows(self.request.auth, dataset) or not can(self.request.user, Action.VIEW_PROJECT, dataset):
            raise Http404
        return dataset

    def _version(self, number) -> DatasetVersion:
        return get_object_or_404(
            DatasetVersion.objects.select_related("dataset__project", "profile_job", "parent", "created_by"),
            dataset=self._dataset(),
            number=number,
        )

    @extend_schema(responses=VersionSummarySerializer(many=True))
    def list(self, request, dataset_uuid):
        versions = self._dataset().versions.select_related("created_by", "parent").order_by("-number")
        page = self.paginate_queryset(versions)
        return self.get_paginated_response(VersionSummarySerializer(page, many=True).data)

    def retrieve(self, request, dataset_uuid, number=None):
        return Response(VersionDetailSerializer(self._version(number), context={"request": request}).data)

    @extend_schema(
        parameters=[
            OpenApiParameter(n, str, description=d)
            for n, d in (
                ("page", "page number (1-based)"),
                ("page_size", "rows per page, at most 500"),
                ("sort", "column"),
                ("desc", "1 for descending"),
                ("filter[<column>]", "contains; =x; >x; >=x; <x; <=x; !x; is:empty"),
            )
        ],
        responses={200: dict, 409: OpenApiResponse(description="The version is not ready (still profiling).")},
    )
    @action(detail=True, methods=["get"])
    def rows(self, request, dataset_uuid, number=None):
        version = self._version(number)
        if version.status != DatasetVersion.Status.READY:
            return Response(
                {
                    "detail": f"The rows are available once profiling has finished (now: {version.status}).",
                    "errors": {},
                },
                status=status.HTTP_409_CONFLICT,
            )
        try:
            params = grid_params(request.query_params)
            page = read_version_rows(version, request.user, params)
        except GridQueryError as exc:
            raise exceptions.ValidationError({"query": [str(exc)]}) from None

        def link(n: int) -> str | None:
            if n < 1 or n > page.pages:
                return None
            query = request.query_params.copy()
            query["page"] = n
            return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

        return Response(
            {
                "count": page.total,
                "next": link(page.page + 1),
                "previous": link(page.page - 1),
                "page": page.page,
                "pages": page.pages,
                "columns": page.columns,
                "results": [dict(zip(page.columns, row, strict=True)) for row in page.rows],
            }
        )

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {
                    "plan": {
                        "type": "object",
                        "description": '{"<column>": {"method": "keep|drop|mask|hash|generalise", '
                        '"width": number, "level": "month|year"}}',
                    },
                    "description": {"type": "string"},
                },
            }
        },
        responses={202: dict},
    )
    @action(detail=True, methods=["post"])
    def anonymise(self, request, dataset_uuid, number=None):
        """Start a job that writes an anonymised copy of this version as a new, derived version."""
        version = self._version(number)
        if not hasattr(request.data, "get"):  # a JSON list: there is no plan to read
            raise exceptions.ValidationError({"plan": ['Send a JSON object: {"plan": {"<column>": {…}}}.']})
        plan = request.data.get("plan")
        if not isinstance(plan, dict) or not all(isinstance(v, dict) for v in plan.values()):
            raise exceptions.ValidationError({"plan": ['Give {"<column>": {"method": "hash"}, …}.']})
        try:
            job = services.start_anonymisation(
                version, actor=request.user, plan=plan, description=str(request.data.get("description", ""))[:500]
            )
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Your role in this project cannot change data.") from None
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return job_accepted(job, request)

    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {"column": {"type": "string"}, "reveal": {"type": "boolean"}},
            }
        },
        responses={200: VersionDetailSerializer},
    )
    @action(detail=True, methods=["post"])
    def reveal(self, request, dataset_uuid, number=None):
        version = self._version(number)
        column = request.data.get("column") if hasattr(request.data, "get") else None
        if not isinstance(column, str) or not column:
            raise exceptions.ValidationError({"column": ["Name the PII column to reveal or hide."]})
        reveal = request.data.get("reveal", True)
        if not isinstance(reveal, bool):
            raise exceptions.ValidationError({"reveal": ["Use true (reveal to viewers) or false (hide)."]})
        try:
            version = services.set_column_revealed(version, actor=request.user, column=column, revealed=reveal)
        except DjangoPermissionDenied:
            raise exceptions.PermissionDenied("Only project admins can reveal personal data.") from None
        except DjangoValidationError as exc:
            raise service_errors(exc) from None
        return Response(VersionDetailSerializer(version, context={"request": request}).data)
