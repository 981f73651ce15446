"""Guidance pages (included at the site root by portal/urls.py)."""

urlpatterns: list = []
