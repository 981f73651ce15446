"""Registry pages: a project's models, one model with its versions, and the comparison of versions."""

from __future__ import annotations

urlpatterns: list = []
