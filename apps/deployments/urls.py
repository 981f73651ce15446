"""Deployment pages: one list of routes, views in apps/deployments/views/ (one module per feature)."""

from apps.deployments.views import pages, predictions

urlpatterns = [*pages.urlpatterns, *predictions.urlpatterns]
