"""Registry pages: mlflow (being built)."""

from __future__ import annotations

urlpatterns: list = []
