"""The audit packet of a model version (being built)."""

from __future__ import annotations

urlpatterns: list = []
api_urlpatterns: list = []
