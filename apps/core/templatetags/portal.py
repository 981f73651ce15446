"""Shared template pieces: Plotly charts rendered without inline script (CSP), status badges."""

from __future__ import annotations

import json

from django import forms, template
from django.utils.html import format_html, json_script

register = template.Library()


@register.simple_tag
def plotly_chart(figure, element_id: str, label: str):
    """A chart div plus its figure as a JSON data island; static/js/portal.js draws it."""
    data = json_script(json.loads(figure.to_json()), f"{element_id}-data")
    return format_html(
        '<div id="{}" class="plotly-chart" role="img" aria-label="{}" data-plotly-source="{}-data"></div>{}',
        element_id, label, element_id, data,
    )


_STATUS_CLASSES = {"queued": "secondary", "running": "primary", "succeeded": "success", "failed": "danger",
                   "active": "success", "revoked": "secondary", "expired": "warning",
                   "profiling": "primary", "ready": "success", "importing": "primary", "quarantined": "warning",
                   "archived": "secondary"}


@register.simple_tag
def status_badge(status: str, label: str = ""):
    return format_html('<span class="badge text-bg-{}">{}</span>',
                       _STATUS_CLASSES.get(status, "secondary"), label or status.capitalize())


@register.simple_tag
def field_widget(field):
    """Render a form field's widget with Bootstrap classes and the ARIA links to its help and errors."""
    widget = field.field.widget
    if isinstance(widget, forms.CheckboxInput):
        css = "form-check-input"
    elif isinstance(widget, forms.Select):
        css = "form-select"
    else:
        css = "form-control"
    described = [f"{field.auto_id}_helptext"] if field.help_text else []
    attrs = {"class": css}
    if field.errors:
        attrs["class"] += " is-invalid"
        attrs["aria-invalid"] = "true"
        described.append(f"{field.auto_id}_error")
    if described:
        attrs["aria-describedby"] = " ".join(described)
    return field.as_widget(attrs=attrs)
