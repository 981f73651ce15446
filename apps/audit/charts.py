"""Audit charts: pure functions from data to a Plotly figure."""

from __future__ import annotations

import plotly.graph_objects as go


def events_per_day_figure(counts: list[tuple]) -> go.Figure:
    days = [d.isoformat() for d, _ in counts]
    values = [n for _, n in counts]
    fig = go.Figure(go.Bar(x=days, y=values, marker_color="#0b5cad", name="Events",
                           hovertemplate="%{x}: %{y} event(s)<extra></extra>"))
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 10, "b": 40}, height=240, bargap=0.2,
        xaxis={"title": None, "type": "date"}, yaxis={"title": "Events", "rangemode": "tozero", "tickformat": ",d",
               # whole-number ticks: small counts would otherwise get 0.2, 0.4, …
               "dtick": 1 if max(values, default=0) <= 5 else None},
        plot_bgcolor="#ffffff", paper_bgcolor="#ffffff",
    )
    return fig
