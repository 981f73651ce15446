"""Monitoring template pieces: readings with feature names as code, the traffic-light health badge, sparklines."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join

from apps.monitoring.charts import sparkline_points
from apps.monitoring.readings import percent

register = template.Library()

# level → (Bootstrap badge class, symbol, word): colour AND text and shape, so it reads without colour (WCAG 1.4.1).
HEALTH = {
    "green": ("text-bg-success", "●", "Healthy"),
    "amber": ("text-bg-warning", "▲", "Needs attention"),
    "red": ("text-bg-danger", "■", "Failing"),
    "unknown": ("text-bg-secondary", "?", "Unknown"),
}


@register.filter
def reading(text: str):
    """Escape a reading, then show `name` as <code>name</code>."""
    pieces = str(text or "").split("`")
    if len(pieces) % 2 == 0:  # an unmatched backtick: show the text as it is
        return text
    return format_html_join("", "{}", ((format_html("<code>{}</code>", p) if i % 2 else p,)
                                       for i, p in enumerate(pieces)))


@register.filter
def share(value):
    """0.024 → "2.4%" (readings.percent); "–" when unknown."""
    return "–" if value is None else percent(value)


@register.simple_tag
def health_badge(health: dict | None, *, detail: bool = True):
    level = (health or {}).get("level", "unknown")
    css, symbol, word = HEALTH.get(level, HEALTH["unknown"])
    reason = (health or {}).get("reason", "")
    badge = format_html('<span class="badge {}" data-health="{}"><span aria-hidden="true">{}</span> {}</span>',
                        css, level, symbol, word)
    if detail and reason:
        return format_html('{} <span class="small text-body-secondary">{}</span>', badge, reason)
    return badge


@register.simple_tag
def sparkline(values, label: str, width: int = 120, height: int = 28):
    """A small inline SVG trend (built on the server: no script, no figure JSON)."""
    points = sparkline_points(list(values or []), width=width, height=height)
    if not points:
        return ""
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<title>{}</title><polyline fill="none" stroke="#0b5cad" stroke-width="1.5" points="{}"/></svg>',
        width, height, width, height, label, label, points)
