"""URL map: pages per app, the REST API under /api/v1/, schema and docs under /api/."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from apps.accounts import api as accounts_api
from apps.accounts import sso_api
from apps.approvals.packet import api_urlpatterns as packet_api_patterns
from apps.audit import api as audit_api
from apps.core import api as core_api
from apps.core import views as core_views
from apps.datasets import api as datasets_api
from apps.deployments import api as deployments_api
from apps.monitoring.views import pages as monitoring_pages

router = DefaultRouter(trailing_slash=True)
router.register("projects", accounts_api.ProjectViewSet, basename="project")
router.register(r"projects/(?P<project_slug>[a-z0-9-]+)/members", accounts_api.ProjectMembersViewSet,
                basename="project-member")
router.register("tokens", accounts_api.ApiTokenViewSet, basename="token")
router.register("users", accounts_api.UserViewSet, basename="user")
router.register("notifications", accounts_api.NotificationViewSet, basename="notification")
router.register("jobs", core_api.JobViewSet, basename="job")
router.register("audit/events", audit_api.AuditEventViewSet, basename="audit-event")
router.register("datasets", datasets_api.DatasetViewSet, basename="dataset")
router.register(r"datasets/(?P<dataset_uuid>[0-9a-f-]{36})/versions", datasets_api.DatasetVersionViewSet,
                basename="dataset-version")

members_collection = accounts_api.ProjectMembersCollection.as_view(
    {"get": "list", "post": "create", "patch": "partial_update", "delete": "destroy"})

api_patterns = [
    path("auth/token/", accounts_api.obtain_token, name="auth-token"),
    path("audit/verify/", audit_api.verify, name="audit-verify"),
    path("sso/group-mappings/", sso_api.GroupMappingViewSet.as_view({"get": "list", "post": "create"}),
         name="sso-group-mapping-list"),
    path("sso/group-mappings/<uuid:uuid>/", sso_api.GroupMappingViewSet.as_view(
        {"get": "retrieve", "patch": "partial_update", "delete": "destroy"}), name="sso-group-mapping-detail"),
    path("projects/<slug:project_slug>/members/", members_collection, name="project-member-list"),
    path("", include("apps.registry.api_urls")),
    path("", include("apps.approvals.api")),
    path("", include("apps.deployments.api_urls")),
    path("", include("apps.monitoring.api_urls")),
    path("", include("apps.guidance.api_urls")),
    *packet_api_patterns,
    *router.urls,
]

urlpatterns = [
    # The serving hot path first: Django tries patterns in order, and ~40 others would be tried before it.
    # (It is also named in the API namespace below, for reverse().)
    path("api/v1/deployments/<slug:slug>/invocations", deployments_api.invocations),
    path("", monitoring_pages.operations, name="home"),  # the Model Operations Center is everyone's home page
    path("", include("apps.accounts.urls")),
    path("", include("apps.core.urls")),
    path("", include("apps.datasets.urls")),
    path("", include("apps.registry.urls")),
    path("", include("apps.approvals.urls")),
    path("", include("apps.deployments.urls")),
    path("", include("apps.monitoring.urls")),
    path("", include("apps.guidance.urls")),
    path("audit/", include("apps.audit.urls")),
    path("api/v1/", include((api_patterns, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]

handler404 = core_views.not_found
handler500 = core_views.server_error  # an outage of the database or Redis answers 503 with Retry-After
