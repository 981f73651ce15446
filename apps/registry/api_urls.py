"""The registry's API routes (included under /api/v1/ by portal/urls.py), one module per feature."""

from apps.registry import api, api_card, api_mlflow

urlpatterns = [*api.urlpatterns, *api_card.urlpatterns, *api_mlflow.urlpatterns]
