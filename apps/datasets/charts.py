"""Dataset charts: pure functions from a column's stored profile to a Plotly figure (apps.core.charts)."""

from __future__ import annotations

from apps.core.charts import Figure, named_colorscale, trace

BLUE = "#0b5cad"
_LAYOUT = {
    "margin": {"l": 48, "r": 10, "t": 10, "b": 48},
    "height": 220,
    "plot_bgcolor": "#ffffff",
    "paper_bgcolor": "#ffffff",
    "bargap": 0.05,
}


def column_figure(column: dict) -> Figure | None:
    """A histogram for numbers, a time series for dates, the top values otherwise; None if nothing to draw."""
    histogram = column.get("histogram") or {}
    if histogram.get("edges") and histogram.get("counts"):
        edges, counts = histogram["edges"], histogram["counts"]
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=False)]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=False)]
        labels = [f"{a:,.4g} – {b:,.4g}" for a, b in zip(edges[:-1], edges[1:], strict=False)]
        fig = Figure(trace("bar", x=centres, y=counts, width=widths, marker={"color": BLUE}, customdata=labels,
                           hovertemplate="%{customdata}: %{y:,} rows<extra></extra>"))
        return fig.update_layout(**_LAYOUT, xaxis={"title": column["name"]}, yaxis={"title": "Rows"})
    if histogram.get("periods") and histogram.get("counts"):
        fig = Figure(trace("scatter", x=histogram["periods"], y=histogram["counts"], mode="lines+markers",
                           line={"color": BLUE}, hovertemplate="%{x}: %{y:,} rows<extra></extra>"))
        return fig.update_layout(**_LAYOUT, xaxis={"title": column["name"]}, yaxis={"title": "Rows"})
    top = column.get("top_values") or []
    if top:
        values = [t["value"] if t["value"] != "" else "(empty)" for t in top][::-1]
        fig = Figure(trace("bar", x=[t["count"] for t in top][::-1], y=values, orientation="h",
                           marker={"color": BLUE}, hovertemplate="%{y}: %{x:,} rows<extra></extra>"))
        return fig.update_layout(**_LAYOUT, xaxis={"title": "Rows"}, yaxis={"automargin": True, "type": "category"})
    return None


def correlation_figure(correlations: dict | None) -> Figure | None:
    """A heatmap of Pearson correlations between numeric columns, or None if fewer than two."""
    if not correlations or len(correlations.get("columns") or []) < 2:
        return None
    names = correlations["columns"]
    fig = Figure(trace("heatmap", z=correlations["matrix"], x=names, y=names, zmin=-1, zmax=1,
                       colorscale=named_colorscale("RdBu"), reversescale=True,
                       hovertemplate="%{y} × %{x}: %{z:.2f}<extra></extra>"))
    return fig.update_layout(**{**_LAYOUT, "height": max(260, 28 * len(names) + 120)},
                             yaxis={"autorange": "reversed"})
