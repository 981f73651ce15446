"""Registry API: card endpoints (being built)."""

from __future__ import annotations

urlpatterns: list = []
