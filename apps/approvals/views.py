"""Approval pages (being built): the queue, a request with its evidence and the decision form, environments."""

from __future__ import annotations

urlpatterns: list = []
