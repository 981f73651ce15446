"""Shared template pieces: Plotly charts rendered without inline script (CSP), status badges."""

from __future__ import annotations

from django import forms, template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

register = template.Library()


# What django.utils.html.json_script escapes, so that the JSON cannot close the <script> element it sits in.
_SCRIPT_SAFE = {ord(">"): "\\u003E", ord("<"): "\\u003C", ord("&"): "\\u0026"}


@register.simple_tag
def plotly_chart(figure, element_id: str, label: str):
    """A chart div plus its figure as a JSON data island; static/js/portal.js draws it.

    Plotly's own JSON goes in as it is, escaped like json_script's (decoding and encoding it again cost
    milliseconds per chart on every page view)."""
    return format_html(
        '<div id="{}" class="plotly-chart" role="img" aria-label="{}" data-plotly-source="{}-data"></div>'
        '<script id="{}-data" type="application/json">{}</script>',
        element_id, label, element_id, element_id, mark_safe(figure.to_json().translate(_SCRIPT_SAFE)),  # noqa: S308
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
