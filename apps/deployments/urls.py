"""Deployment pages: one list of routes, views in apps/deployments/views/ (one module per feature)."""

from apps.deployments.views import batch, pages, predictions

urlpatterns = [*batch.urlpatterns, *pages.urlpatterns, *predictions.urlpatterns]
