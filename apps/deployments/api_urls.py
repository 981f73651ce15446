"""The deployments API routes (included under /api/v1/ by portal/urls.py), one module per feature."""

from apps.deployments import api, api_package

urlpatterns = [*api.core_urlpatterns, *api_package.urlpatterns]
