"""The monitoring API routes (included under /api/v1/ by portal/urls.py), one module per feature."""

from apps.monitoring import api, api_alerts, api_retraining

urlpatterns = [*api.urlpatterns, *api_alerts.urlpatterns, *api_retraining.urlpatterns]
