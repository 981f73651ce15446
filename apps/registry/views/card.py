"""Registry pages: card (being built)."""

from __future__ import annotations

urlpatterns: list = []
