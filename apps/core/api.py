"""API plumbing shared by every app (error bodies, 202 job answers) and the jobs endpoints."""

from __future__ import annotations

import logging

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
    ValidationError,
)
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core import services
from apps.core.models import Job


def _flatten(value) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _flatten(v)]
    if isinstance(value, list):
        return [m for item in value for m in _flatten(item)]
    return [str(value)]


def exception_handler(exc, context):
    """Every API error answers `{"detail": "...", "errors": {field: [messages]}}` (shared/API.md)."""
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "The request body is too large.", "errors": {}},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, SuspiciousOperation):
        # Django would answer these with an HTML 400 page; log them where Django would.
        logging.getLogger(f"django.security.{exc.__class__.__name__}").warning(str(exc))
        detail = ("The request has too many fields or files." if isinstance(exc, TooManyFieldsSent | TooManyFilesSent)
                  else "The request could not be read.")
        return Response({"detail": detail, "errors": {}}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, ValidationError):
        # A model or service check a view did not catch (e.g. a malformed UUID reaching a lookup) is the
        # client's bad input, not a 500.
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict")
                                         else {"non_field_errors": exc.messages})
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        if isinstance(data, dict):
            errors = {field: _flatten(messages) for field, messages in data.items()}
            non_field = errors.get("non_field_errors") or []
            first_field = next(iter(errors), None)
            detail = non_field[0] if non_field else (
                f"{first_field}: {errors[first_field][0]}" if first_field else "Invalid input."
            )
        else:
            errors = {"non_field_errors": _flatten(data)}
            detail = errors["non_field_errors"][0] if errors["non_field_errors"] else "Invalid input."
        response.data = {"detail": detail, "errors": errors}
    else:
        detail = data.get("detail", "") if isinstance(data, dict) else " ".join(_flatten(data))
        response.data = {"detail": str(detail), "errors": {}}
    return response


class JobSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Job
        fields = ["id", "kind", "kind_label", "status", "progress", "message", "result", "error",
                  "project", "created_by", "created_at", "started_at", "finished_at", "url"]
        read_only_fields = fields

    def get_url(self, job: Job) -> str:
        return reverse("api:job-detail", args=[job.id], request=self.context.get("request"))


def job_accepted(job: Job, request) -> Response:
    """The answer to any request that started long work: 202 with where to watch it."""
    body = {"job": {"id": str(job.id), "status": job.status, "progress": job.progress,
                    "url": reverse("api:job-detail", args=[job.id], request=request)}}
    return Response(body, status=status.HTTP_202_ACCEPTED)


class JobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Background jobs the caller may see (their own and their projects')."""

    serializer_class = JobSerializer

    def get_queryset(self):
        qs = Job.objects.visible_to(self.request.user).select_related("project", "created_by")
        token = self.request.auth
        if getattr(token, "project_id", None):
            qs = qs.filter(project_id=token.project_id)
        status_filter = self.request.query_params.get("status")
        if status_filter:
            if status_filter not in Job.Status.values:
                raise exceptions.ValidationError({"status": [f"Choose one of {', '.join(Job.Status.values)}."]})
            qs = qs.filter(status=status_filter)
        return qs

    @extend_schema(request=None, responses={202: dict})
    @action(detail=False, methods=["post"], url_path="system-check")
    def system_check(self, request):
        """Start a system check job (database, cache, storage, MLflow store)."""
        return job_accepted(services.start_system_check(actor=request.user), request)


# --- The schema documents every operation's error answers --------------------------------------------------

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every API error: a sentence for people and, per field, what was wrong with it.",
    "properties": {
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
    },
    "required": ["detail", "errors"],
}

ERROR_DESCRIPTIONS = {
    "400": "The request was not valid; `errors` names each field and what was wrong with it.",
    "401": "No credentials, or a token that is unknown, revoked or expired.",
    "403": "The caller may not do this (their role in the project, or a token scoped to another project).",
    "404": "No such object, or one the caller may not see (or, in a list, no such page).",
    "409": "The object is not in a state that allows this (already decided, archived, still running...).",
    "413": "The request body is too large.",
    "415": "The request body's content type is not accepted here.",
    "429": "Too many requests; try again after the number of seconds in `Retry-After`.",
}
_BODY_METHODS = {"post", "put", "patch"}


def document_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: the errors exception_handler() answers, on every operation that can
    meet them, so a client (and schemathesis) can rely on the schema for 4xx answers too."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Error", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/Error"}
    throttled = {(path, method.lower()) for path, _, method, callback in getattr(generator, "endpoints", None) or ()
                 if getattr(getattr(callback, "cls", None), "throttle_classes", None)}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            # Any request can be unreadable (400), carry a bad token (401, even where anonymous callers are let
            # in) or be refused (403: a role, a project-scoped token, CSRF for a session).
            codes = ["400", "401", "403"]
            paged = any(p.get("name") == "page" and p.get("in") == "query" for p in operation.get("parameters", []))
            if "{" in path or paged:  # paged: DRF's pagination answers a page past the end with a 404
                codes.append("404")
            if method in _BODY_METHODS:
                codes += ["409", "413", "415"]
            if (path, method) in throttled:
                codes.append("429")
            responses = operation.setdefault("responses", {})
            codes += [code for code in responses if code >= "400" and code not in codes]  # e.g. a view's own 409
            for code in codes:
                if code in responses and responses[code].get("content"):
                    continue
                responses[code] = {"description": responses.get(code, {}).get("description")
                                   or ERROR_DESCRIPTIONS.get(code, "An error."),
                                   "content": {"application/json": {"schema": ref}}}
    return result
