"""Monitoring pages (included at the site root by portal/urls.py), one module per feature."""

from apps.monitoring.views import alerts, feedback, pages, retraining

urlpatterns = [*pages.urlpatterns, *alerts.urlpatterns, *retraining.urlpatterns, *feedback.urlpatterns]
