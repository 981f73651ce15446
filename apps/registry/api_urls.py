"""The registry's API routes (included under /api/v1/ by portal/urls.py), one module per feature.

Fixed paths under models/ (import-mlflow) come before api's `models/<ref>/`, which would otherwise take them.
"""

from apps.registry import api, api_card, api_mlflow

urlpatterns = [*api_mlflow.urlpatterns, *api.urlpatterns, *api_card.urlpatterns]
