from django.urls import path

from apps.audit import views

urlpatterns = [
    path("", views.audit_log, name="audit-log"),
    path("export.csv", views.audit_csv, name="audit-csv"),
]
