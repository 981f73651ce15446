"""Guidance pages (included at the site root by portal/urls.py)."""

from django.urls import path, re_path

from apps.guidance import views

urlpatterns = [
    path("help/", views.help_page, name="guidance-help"),
    path("help/tour/dismiss/", views.tour_dismiss, name="guidance-tour-dismiss"),
    path("help/tour/restart/", views.tour_restart, name="guidance-tour-restart"),
    # Strict patterns: anything else (dots, slashes, encoded slashes) never reaches the views.
    re_path(r"^help/docs/images/(?P<file_name>[A-Za-z0-9][A-Za-z0-9_.-]*\.(?:png|svg))$", views.doc_image,
            name="guidance-doc-image"),
    re_path(r"^help/docs/(?P<name>[a-z0-9][a-z0-9_-]*)/$", views.doc, name="guidance-doc"),
]
