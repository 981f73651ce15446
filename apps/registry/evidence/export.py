"""The model card as one standalone HTML file: inline CSS, the chart as inline SVG, no script, no external asset."""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import mark_safe

from apps.accounts.permissions import Action, require
from apps.registry import charts
from apps.registry.evidence.facts import card_facts
from apps.registry.models import ModelVersion


def export_card_html(version: ModelVersion, *, user) -> str:
    """The card as this user may see it (PII hidden as on the page). No PDF: no maintained pure-Python
    HTML-to-PDF library is installed, and printing this file to PDF from a browser gives the same result."""
    require(user, Action.VIEW_PROJECT, version)
    context = card_facts(version, user)
    context.update(
        importance_svg=mark_safe(charts.importance_svg(version.explainability)),  # noqa: S308 - built from escaped parts
        importance_label=charts.importance_label(version.explainability or {}),
        exported_at=timezone.now(),
        exported_by=user,
    )
    return render_to_string("registry/card_export.html", context)
