"""Deployments API: download a deployment as a container build context (`GET .../package/`)."""

from __future__ import annotations

import logging

from django.http import FileResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.api import call_service
from apps.deployments import packaging
from apps.deployments.models import Deployment

logger = logging.getLogger(__name__)


class _AnyAccept(BaseContentNegotiation):
    """The answer is an archive whatever the client accepts (`Accept: application/gzip` must not be a 406);
    errors are JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class PackageView(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = _AnyAccept

    @extend_schema(
        operation_id="deployments_package",
        responses={(200, "application/gzip"): OpenApiTypes.BINARY,
                   409: OpenApiResponse(description="the champion cannot be exported now (the reason is given), e.g. "
                                                    "its files are missing from the model store"),
                   503: OpenApiResponse(description="the model store could not be reached; retry after `Retry-After` "
                                                    "seconds")},
    )
    def get(self, request, slug: str):
        """The champion as a container build context: model/, serve.py, protocol.py, requirements.txt,
        Dockerfile, README.md and MANIFEST.json in a .tar.gz (scientists and admins; audited)."""
        deployments = Deployment.objects.visible_to(request.user).select_related(
            "project", "environment", "champion__model", "champion__trusted_by")
        scoped = getattr(request.auth, "project_id", None)
        if scoped:
            deployments = deployments.filter(project_id=scoped)
        deployment = get_object_or_404(deployments, slug=slug)
        try:
            package = call_service(packaging.export, deployment, actor=request.user,
                                   denied="Your role in this project cannot export deployments.")
        except packaging.NotPackageable as exc:
            return Response({"detail": str(exc), "errors": {"champion": [str(exc)]}}, status=status.HTTP_409_CONFLICT)
        except Exception as exc:
            from mlflow.exceptions import MlflowException  # loaded by now (the export used it); heavy at start-up

            if isinstance(exc, FileNotFoundError) or (
                    isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"):
                # The model store no longer has the champion's files: retrying will not help, a person must.
                logger.warning("deployment %s: the champion's files are missing from the model store", slug)
                detail = ("The champion's files are missing from the model store, so no archive can be built. "
                          "Tell a project admin.")
                return Response({"detail": detail, "errors": {"champion": [detail]}}, status=status.HTTP_409_CONFLICT)
            if not isinstance(exc, MlflowException | OSError):
                raise
            # The model store cannot be reached: answered like serving answers it (503), not a 500 page.
            logger.exception("deployment %s: the champion's files could not be read for a package", slug)
            return Response({"detail": "The model store could not be reached. The operators have been told in the "
                                       "logs; try again later.", "errors": {}},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "30"})
        response = FileResponse(package.file, as_attachment=True, filename=package.filename,
                                content_type="application/gzip")
        response["Content-Length"] = str(package.size)
        response["X-Package-SHA256"] = package.sha256
        return response


urlpatterns = [
    path("deployments/<slug:slug>/package/", PackageView.as_view(), name="deployment-package"),
]
