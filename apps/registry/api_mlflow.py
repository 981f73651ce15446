"""Registry API: mlflow endpoints (being built)."""

from __future__ import annotations

urlpatterns: list = []
