"""The deployments API routes (included under /api/v1/ by portal/urls.py), one module per feature."""

from apps.deployments import api, api_batch, api_package, api_predictions

urlpatterns = [*api.core_urlpatterns, *api_predictions.urlpatterns, *api_package.urlpatterns, *api_batch.urlpatterns]
