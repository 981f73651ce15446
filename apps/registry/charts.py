"""Registry charts: pure functions from stored evidence to a Plotly figure (page) or inline SVG (export)."""

from __future__ import annotations

from django.utils.html import escape

from apps.core.charts import Figure, trace

BLUE = "#0b5cad"
_METRIC_LABELS = {"accuracy": "Drop in accuracy when shuffled", "r2": "Drop in R² when shuffled"}


def importance_label(explainability: dict) -> str:
    return _METRIC_LABELS.get(explainability.get("metric", ""), "Drop in score when shuffled")


def importance_figure(explainability: dict | None, *, top: int = 20) -> Figure | None:
    """Horizontal bars of permutation importance, most important on top, with ± one std as error bars."""
    features = (explainability or {}).get("features") or []
    if not features:
        return None
    shown = features[:top][::-1]
    fig = Figure(trace(
        "bar", x=[f["importance"] for f in shown], y=[f["name"] for f in shown], orientation="h",
        marker={"color": BLUE}, error_x={"type": "data", "array": [f.get("std") or 0 for f in shown], "visible": True},
        hovertemplate="%{y}: %{x:.4f}<extra></extra>"))
    return fig.update_layout(margin={"l": 120, "r": 10, "t": 10, "b": 48}, height=max(160, 28 * len(shown) + 70),
                             plot_bgcolor="#ffffff", paper_bgcolor="#ffffff",
                             xaxis={"title": importance_label(explainability)})


def importance_svg(explainability: dict | None, *, top: int = 20, width: int = 560) -> str:
    """The same bars as a self-contained SVG string (for the standalone export: no script, no external asset)."""
    features = (explainability or {}).get("features") or []
    if not features:
        return ""
    shown = features[:top]
    label_w, bar_h, gap = 150, 18, 6
    largest = max((abs(f["importance"]) for f in shown), default=0) or 1.0
    room = width - label_w - 70
    height = len(shown) * (bar_h + gap) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(importance_label(explainability))} per feature">']
    for i, feature in enumerate(shown):
        y = 5 + i * (bar_h + gap)
        length = max(0.0, feature["importance"]) / largest * room
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end" font-size="12">'
                     f'{escape(feature["name"])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{BLUE}"/>')
        parts.append(f'<text x="{label_w + length + 4:.1f}" y="{y + bar_h - 5}" font-size="11">'
                     f'{feature["importance"]:.4f}</text>')
    parts.append("</svg>")
    return "".join(parts)
