"""Deployment pages: one list of routes, views in apps/deployments/views/ (one module per feature)."""

urlpatterns = []
