"""Registry API for the model card: try-it, feature importance, validations, the ONNX hint, simple baselines and
the HTML export."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.reverse import reverse

from apps.accounts.api import call_service
from apps.core.api import job_accepted
from apps.registry import evidence
from apps.registry.api import get_version, visible_versions
from apps.registry.evidence import baselines
from apps.registry.models import ModelValidation


class PredictSerializer(serializers.Serializer):
    inputs = serializers.DictField(help_text="one value per signature input, by column name")


class ValidateSerializer(serializers.Serializer):
    dataset_version = serializers.UUIDField()


class ValidationSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid", read_only=True)
    model_version = serializers.UUIDField(source="model_version.uuid", read_only=True)
    dataset_version = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    job = serializers.SerializerMethodField()

    class Meta:
        model = ModelValidation
        fields = ["id", "model_version", "dataset_version", "verdict", "report", "job", "created_by", "created_at"]
        read_only_fields = fields

    def get_dataset_version(self, validation) -> dict:
        version = validation.dataset_version
        return {"id": str(version.uuid), "dataset": str(version.dataset.uuid), "name": version.dataset.name,
                "number": version.number}

    def get_job(self, validation) -> dict | None:
        job = validation.job
        if job is None:
            return None
        return {"id": str(job.id), "status": job.status, "progress": job.progress,
                "url": reverse("api:job-detail", args=[job.id], request=self.context.get("request"))}


def _job_body(job, request) -> dict:
    return {"id": str(job.id), "status": job.status, "progress": job.progress, "message": job.message,
            "error": job.error, "url": reverse("api:job-detail", args=[job.id], request=request)}


class CardViewSet(viewsets.GenericViewSet):
    """The evidence on a version's model card; reading needs membership, jobs need the scientist role."""

    serializer_class = ValidationSerializer
    queryset = ModelValidation.objects.none()

    @extend_schema(request=PredictSerializer, responses={200: dict})
    def predict(self, request, ref=None):
        """Try the model on one row: prediction, class probabilities and the top contributing features."""
        version = get_version(request, ref)
        body = PredictSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = call_service(evidence.predict, version, actor=request.user, inputs=body.validated_data["inputs"],
                                  denied="Your role cannot try predictions.")
        except evidence.PredictionFailed as exc:
            raise exceptions.ValidationError({"non_field_errors": [str(exc)]}) from None
        return Response(result)

    @extend_schema(request=None, responses={202: dict})
    def explain(self, request, ref=None):
        job = call_service(evidence.start_explain, get_version(request, ref), actor=request.user,
                           denied="Your role cannot run model jobs.")
        return job_accepted(job, request)

    @extend_schema(request=ValidateSerializer, responses={202: dict})
    def validate(self, request, ref=None):
        """Validate a dataset version against the version's signature and training profile (a job)."""
        version = get_version(request, ref)
        body = ValidateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        validation = call_service(evidence.start_validation, version, body.validated_data["dataset_version"],
                                  actor=request.user, denied="Your role cannot run model jobs.")
        response = job_accepted(validation.job, request)
        response.data["validation"] = ValidationSerializer(validation, context={"request": request}).data
        return response

    @extend_schema(responses={200: ValidationSerializer(many=True)})
    def validations(self, request, ref=None):
        version = get_version(request, ref)
        page = self.paginate_queryset(
            version.validations.select_related("dataset_version__dataset", "job", "created_by", "model_version"))
        return self.get_paginated_response(ValidationSerializer(page, many=True, context={"request": request}).data)

    @extend_schema(request=None, responses={202: dict})
    def optimise(self, request, ref=None):
        job = call_service(evidence.start_optimisation, get_version(request, ref), actor=request.user,
                           denied="Your role cannot run model jobs.")
        return job_accepted(job, request)

    @extend_schema(request=None, responses={201: dict})
    def register_onnx(self, request, ref=None):
        """Register the checked ONNX conversion as the model's next version (its import job is in `job`)."""
        variant = call_service(evidence.register_onnx_variant, get_version(request, ref), actor=request.user,
                               denied="Your role cannot import models.")
        response = job_accepted(variant.import_job, request)
        response.data.update({"id": str(variant.uuid), "version": variant.number,
                              "url": reverse("api:model-version-detail", args=[variant.uuid], request=request)})
        response.status_code = status.HTTP_201_CREATED
        return response

    @extend_schema(request=None, responses={200: dict, 202: dict, 404: dict})
    def baselines(self, request, ref=None, number=None):
        """GET: the stored comparison with simple baselines (404 with what is missing if none); POST: run it."""
        version = get_object_or_404(visible_versions(request), model__slug=ref, number=number)
        if request.method == "POST":
            job = call_service(baselines.start_baselines, version, actor=request.user,
                               denied="Your role cannot run model jobs.")
            return job_accepted(job, request)
        state = baselines.baselines_state(version, request.user)
        job = state["baselines_job"] or state["baselines_failed"]
        body = {"version": {"id": str(version.uuid), "model": version.model.slug, "number": version.number},
                "job": _job_body(job, request) if job else None}
        if not state["baselines"]:
            body.update(detail="Not compared with simple baselines yet.", problem=state["baselines_problem"],
                        comparison=None)
            return Response(body, status=status.HTTP_404_NOT_FOUND)
        comparison = {k: v for k, v in state["baselines"].items() if k != "baseline_file"}  # a storage path
        body.update(comparison=comparison, problem=state["baselines_problem"])
        return Response(body)

    @extend_schema(request=None, responses={201: dict})
    def register_baseline(self, request, ref=None, number=None):
        """Register the compared logistic/linear baseline as the model's next version (its import job in `job`)."""
        version = get_object_or_404(visible_versions(request), model__slug=ref, number=number)
        baseline = call_service(baselines.register_baseline, version, actor=request.user,
                                denied="Your role cannot import models.")
        response = job_accepted(baseline.import_job, request)
        response.data.update({"id": str(baseline.uuid), "version": baseline.number,
                              "url": reverse("api:model-version-detail", args=[baseline.uuid], request=request)})
        response.status_code = status.HTTP_201_CREATED
        return response

    @extend_schema(responses={(200, "text/html"): str})
    def card(self, request, ref=None):
        version = get_version(request, ref)
        html = call_service(evidence.export_card_html, version, user=request.user, denied="You may not read this card.")
        response = HttpResponse(html, content_type="text/html; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{version.model.slug}-v{version.number}-card.html"'
        return response


_V = "model-versions/<uuid:ref>/"
urlpatterns = [
    path(f"{_V}predict/", CardViewSet.as_view({"post": "predict"}), name="model-version-predict"),
    path(f"{_V}explain/", CardViewSet.as_view({"post": "explain"}), name="model-version-explain"),
    path(f"{_V}validate/", CardViewSet.as_view({"post": "validate"}), name="model-version-validate"),
    path(f"{_V}validations/", CardViewSet.as_view({"get": "validations"}), name="model-version-validations"),
    path(f"{_V}optimise/", CardViewSet.as_view({"post": "optimise"}), name="model-version-optimise"),
    path(f"{_V}register-onnx/", CardViewSet.as_view({"post": "register_onnx"}), name="model-version-register-onnx"),
    path(f"{_V}card.html", CardViewSet.as_view({"get": "card"}), name="model-version-card"),
    path("models/<str:ref>/versions/<int:number>/baselines/",
         CardViewSet.as_view({"get": "baselines", "post": "baselines"}), name="model-version-baselines"),
    path("models/<str:ref>/versions/<int:number>/baselines/register/",
         CardViewSet.as_view({"post": "register_baseline"}), name="model-version-register-baseline"),
]
