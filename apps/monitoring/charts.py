"""Monitoring figures: pure functions from metrics' numbers to Plotly figures (or a sparkline's SVG points).

Every time chart takes the deployment's markers (deployments, rollbacks, approvals) and draws them as vertical lines
with a legend entry per kind. A builder returns None when there is nothing to draw; the page shows an empty state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils import timezone

from apps.core.charts import Figure, trace

# Colours with at least 4.5:1 contrast on white (WCAG AA for the lines and their legend text).
BLUE, ORANGE, RED, GREEN, PURPLE, GREY = "#0b5cad", "#b35900", "#b02a37", "#1e7b34", "#6f42c1", "#495057"
PALETTE = [BLUE, ORANGE, GREEN, PURPLE, RED, "#0f6674", "#8a5a00", "#a61e4d", GREY, "#3d5a80"]
MARKER_STYLES = {  # kind → (legend name, colour, dash)
    "deployed": ("Deployment", GREEN, "dash"),
    "promoted": ("Deployment", GREEN, "dash"),
    "deployment": ("Deployment", GREEN, "dash"),
    "rolled_back": ("Rollback", RED, "dot"),
    "rollback": ("Rollback", RED, "dot"),
    "approved": ("Approval", PURPLE, "dashdot"),
    "approval": ("Approval", PURPLE, "dashdot"),
}
MARKER_AXIS = "y9"  # an invisible 0–1 axis the marker lines span, whatever the chart's own scale


def x_value(moment) -> str:
    """Plotly date axes have no time zones: send local wall-clock time."""
    if isinstance(moment, dt.datetime):
        if timezone.is_aware(moment):
            moment = timezone.localtime(moment)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(moment, dt.date):
        return moment.isoformat()
    return str(moment)


def _layout(fig: Figure, *, y_title: str, height: int = 280, percent: bool = False, **extra) -> Figure:
    fig.update_layout(
        height=height, margin={"l": 55, "r": 20, "t": 10, "b": 40}, plot_bgcolor="#ffffff", paper_bgcolor="#ffffff",
        legend={"orientation": "h", "y": -0.2}, hovermode="x unified",
        xaxis={"type": "date", "title": None},
        yaxis={"title": y_title, "rangemode": "tozero", **({"tickformat": ".0%"} if percent else {})},
        **extra)
    return fig


def add_markers(fig: Figure, markers: Sequence[dict]) -> Figure:
    """Vertical lines for deployments, rollbacks and approvals: one trace per kind, so each has a legend entry."""
    groups: dict[str, dict] = {}
    for marker in markers:
        name, colour, dash = MARKER_STYLES.get(marker.get("kind", ""), (
            str(marker.get("kind", "event")).replace("_", " ").capitalize(), GREY, "dot"))
        group = groups.setdefault(name, {"x": [], "y": [], "text": [], "colour": colour, "dash": dash})
        when = x_value(marker["time"])
        group["x"] += [when, when, None]
        group["y"] += [0, 1, None]
        label = marker.get("label") or name
        group["text"] += [label, label, None]
    for name, group in groups.items():
        fig.add_scatter(x=group["x"], y=group["y"], text=group["text"], mode="lines", name=name, yaxis=MARKER_AXIS,
                        line={"color": group["colour"], "dash": group["dash"], "width": 1.5},
                        hovertemplate="%{text}<extra></extra>", legendgroup=f"marker-{name}")
    if groups:
        fig.update_layout(yaxis9={"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True})
    return fig


def _points(series) -> tuple[list[str], list]:
    return [x_value(t) for t, _, _ in series.points], [v for _, v, _ in series.points]


def _has_values(*series) -> bool:
    return any(v is not None and (v or n) for s in series if s is not None for _, v, n in s.points)


def usage_figure(requests, markers: Sequence[dict] = ()) -> Figure | None:
    """Requests per bucket (bars)."""
    if not _has_values(requests):
        return None
    x, y = _points(requests)
    fig = Figure(trace("bar", x=x, y=[v or 0 for v in y], name="Requests", marker={"color": BLUE},
                           hovertemplate="%{y:,} requests<extra></extra>"))
    return add_markers(_layout(fig, y_title=f"requests per {_bucket_word(requests.bucket)}", bargap=0.1), markers)


def latency_figure(p50, p95, p99, markers: Sequence[dict] = ()) -> Figure | None:
    if not _has_values(p50, p95, p99):
        return None
    fig = Figure()
    for label, series, colour, dash in (("p50", p50, BLUE, "solid"), ("p95", p95, ORANGE, "dash"),
                                        ("p99", p99, RED, "dot")):
        x, y = _points(series)
        fig.add_scatter(x=x, y=y, name=f"{label} latency", mode="lines+markers", connectgaps=False,
                        line={"color": colour, "dash": dash}, marker={"size": 4},
                        hovertemplate=f"{label} %{{y:.1f}} ms<extra></extra>")
    return add_markers(_layout(fig, y_title="milliseconds"), markers)


def error_rate_figure(error_rate, markers: Sequence[dict] = ()) -> Figure | None:
    if not _has_values(error_rate):
        return None
    x, y = _points(error_rate)
    fig = Figure(trace("scatter", x=x, y=y, name="Error rate", mode="lines+markers", connectgaps=False,
                               line={"color": RED}, fill="tozeroy", hovertemplate="%{y:.1%} failed<extra></extra>"))
    return add_markers(_layout(fig, y_title="share of requests", percent=True), markers)


def quality_figure(missing, out_of_range, markers: Sequence[dict] = ()) -> Figure | None:
    if not _has_values(missing, out_of_range):
        return None
    fig = Figure()
    for label, series, colour, dash in (("Missing (worst feature)", missing, ORANGE, "solid"),
                                        ("Out of range (worst feature)", out_of_range, PURPLE, "dash")):
        x, y = _points(series)
        fig.add_scatter(x=x, y=y, name=label, mode="lines+markers", connectgaps=False,
                        line={"color": colour, "dash": dash}, marker={"size": 4},
                        hovertemplate=f"{label}: %{{y:.1%}}<extra></extra>")
    return add_markers(_layout(fig, y_title="share of rows", percent=True), markers)


def drift_heatmap_figure(data: dict, markers: Sequence[dict] = ()) -> Figure | None:
    """Features × time, coloured by PSI on a fixed 0–0.5 scale so the bands (0.1, 0.25) always look the same."""
    psi = data.get("psi") or []
    if not data.get("features") or not any(v is not None for row in psi for v in row):
        return None
    fig = Figure(trace("heatmap",
        x=[x_value(t) for t in data["times"]], y=list(data["features"]), z=psi, zmin=0, zmax=0.5,
        colorscale=[[0, "#f7fbff"], [0.2, "#c6dbef"], [0.5, "#fdae6b"], [1, "#a50f15"]],
        colorbar={"title": {"text": "PSI"}, "tickvals": [0, 0.1, 0.25, 0.5], "ticktext": ["0", "0.1", "0.25", "≥ 0.5"]},
        hoverongaps=False, hovertemplate="%{y} at %{x}: PSI %{z:.2f}<extra></extra>"))
    fig.update_layout(height=max(200, 60 + 28 * len(data["features"])), margin={"l": 110, "r": 20, "t": 10, "b": 40},
                      plot_bgcolor="#ffffff", paper_bgcolor="#ffffff", xaxis={"type": "date"},
                      yaxis={"automargin": True}, legend={"orientation": "h", "y": -0.2})
    return add_markers(fig, markers)


def distribution_figure(entry: dict | None, *, title: str = "") -> Figure | None:
    """Grouped bars of the share of values per bin: reference against now (a drift_report feature or predictions)."""
    if not entry:
        return None
    reference, current = entry.get("reference_shares") or [], entry.get("current_shares") or []
    if not reference and not current:
        return None
    labels = entry.get("labels") or [str(i + 1) for i in range(max(len(reference), len(current)))]
    fig = Figure()
    fig.add_bar(x=labels, y=reference, name="Reference", marker={"color": GREY},
                hovertemplate="%{x}: %{y:.1%} in the reference<extra></extra>")
    fig.add_bar(x=labels, y=current, name="Now", marker={"color": BLUE},
                hovertemplate="%{x}: %{y:.1%} now<extra></extra>")
    fig.update_layout(height=260, margin={"l": 55, "r": 20, "t": 10, "b": 60}, barmode="group", bargap=0.2,
                      plot_bgcolor="#ffffff", paper_bgcolor="#ffffff", legend={"orientation": "h", "y": -0.3},
                      xaxis={"type": "category", "title": title or None},
                      yaxis={"title": "share of values", "tickformat": ".0%", "rangemode": "tozero"})
    return fig


def performance_figure(series, *, label: str, percent: bool, markers: Sequence[dict] = ()) -> Figure | None:
    if not _has_values(series):
        return None
    x, y = _points(series)
    fig = Figure(trace("scatter", x=x, y=y, name=label, mode="lines+markers", connectgaps=False, line={"color": GREEN},
                               customdata=[n for _, _, n in series.points],
                               hovertemplate=(f"{label} %{{y:{'.1%' if percent else '.3g'}}}"
                                              " on %{customdata} labels<extra></extra>")))
    return add_markers(_layout(fig, y_title=label, percent=percent), markers)


# --- Operations Center and impact ----------------------------------------------------------------------------------


def stacked_daily_figure(rows: Sequence[tuple[str, Sequence[tuple]]], *, y_title: str) -> Figure | None:
    """One bar trace per model, stacked: rows are (name, [(date, count), ...])."""
    if not any(n for _, points in rows for _, n in points):
        return None
    fig = Figure()
    for i, (name, points) in enumerate(rows):
        fig.add_bar(x=[x_value(d) for d, _ in points], y=[n for _, n in points], name=name,
                    marker={"color": PALETTE[i % len(PALETTE)]}, hovertemplate=f"{name}: %{{y:,}}<extra></extra>")
    fig.update_layout(barmode="stack", bargap=0.15)
    return _layout(fig, y_title=y_title, height=320)


def daily_line_figure(points: Sequence[tuple], *, name: str, y_title: str) -> Figure | None:
    if not any(n for _, n in points):
        return None
    fig = Figure(trace("scatter", x=[x_value(d) for d, _ in points], y=[n for _, n in points], name=name,
                               mode="lines+markers", line={"color": BLUE}, hovertemplate="%{y:,}<extra></extra>"))
    return _layout(fig, y_title=y_title, height=260)


def sparkline_points(values: Sequence[float | None], *, width: int = 120, height: int = 28, pad: int = 2) -> str:
    """SVG polyline points for a small trend line (no JS needed): x evenly spaced, y scaled to the maximum."""
    values = [v or 0 for v in values]
    if not values:
        return ""
    top = max(values) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    return " ".join(f"{pad + i * step:.1f},{height - pad - (v / top) * (height - 2 * pad):.1f}"
                    for i, v in enumerate(values))


def _bucket_word(bucket: str) -> str:
    return {"5m": "5 minutes", "1h": "hour", "1d": "day"}.get(bucket, "bucket")
