"""URL map of a serving-only process (PORTAL_SERVICE=serving): the invocations endpoint and the health check.

Paths and names are those of portal/urls.py, so a reverse proxy can send `/api/v1/deployments/<slug>/invocations`
to these processes and everything else to the web ones, and clients see one host either way.
"""

from django.http import JsonResponse
from django.urls import include, path

from apps.core import views as core_views
from apps.deployments import api as deployments_api

api_patterns = [
    path("deployments/<slug:slug>/invocations", deployments_api.invocations, name="deployment-invocations"),
]

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("api/v1/", include((api_patterns, "api"))),
]


def not_found(request, exception=None):
    # JSON for every path: the portal's HTML 404 page links to pages this process does not have.
    return JsonResponse({"detail": "Not found. This server answers only "
                                   "POST /api/v1/deployments/<slug>/invocations and /healthz.", "errors": {}},
                        status=404)


handler404 = not_found
handler500 = core_views.server_error
