from django.urls import path

from apps.core import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("jobs/", views.job_list, name="job-list"),
    path("jobs/system-check/", views.system_check, name="job-system-check"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job-detail"),
]
