"""Every chart builder writes plain data (apps.core.charts) that plotly.py's own validation accepts unchanged.

The builders skip plotly.py's object model for speed, so a misspelt property would otherwise reach the browser
and be ignored by plotly.js in silence; here plotly.py checks each figure the pages can draw."""

from __future__ import annotations

import datetime as dt
import json

import plotly.graph_objects as go
import pytest
from django.utils import timezone

from apps.core.charts import Figure, named_colorscale
from apps.datasets import charts as dataset_charts
from apps.deployments.views.pages import live_figure
from apps.monitoring import charts as monitoring
from apps.monitoring.metrics import Series
from apps.registry import charts as registry_charts

T = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)
HOURS = [T + dt.timedelta(hours=h) for h in range(3)]
MARKERS = [{"time": T, "kind": "deployed", "label": "Deployed v1"},
           {"time": HOURS[1], "kind": "rolled_back", "label": "Rolled back"},
           {"time": HOURS[2], "kind": "stopped", "label": "Stopped"}]


def _series(name: str, values) -> Series:
    return Series(name, "1h", [(t, v, 5) for t, v in zip(HOURS, values, strict=True)])


def _every_chart() -> dict[str, Figure]:
    return {
        "histogram": dataset_charts.column_figure({"name": "age", "histogram": {"edges": [0, 10, 20.5],
                                                                               "counts": [3, 4]}}),
        "time series": dataset_charts.column_figure({"name": "when", "histogram": {"periods": ["2024-01", "2024-02"],
                                                                                   "counts": [3, 4]}}),
        "top values": dataset_charts.column_figure({"name": "city", "top_values": [{"value": "Oslo", "count": 3},
                                                                                   {"value": "", "count": 1}]}),
        "correlations": dataset_charts.correlation_figure({"columns": ["a", "b"], "matrix": [[1, -0.3], [-0.3, 1]]}),
        "importance": registry_charts.importance_figure({"metric": "r2", "features": [
            {"name": "age", "importance": 0.2, "std": 0.01}, {"name": "income", "importance": 0.1}]}),
        "usage": monitoring.usage_figure(_series("requests", [5, 7, None]), MARKERS),
        "latency": monitoring.latency_figure(_series("p50", [5, 6, 7]), _series("p95", [9, 9, 9]),
                                             _series("p99", [20, 30, 25]), MARKERS),
        "error rate": monitoring.error_rate_figure(_series("error_rate", [0, 0.1, 0.02]), MARKERS),
        "quality": monitoring.quality_figure(_series("missing", [0, 0.1, 0]), _series("oor", [0.2, 0, 0]), MARKERS),
        "drift": monitoring.drift_heatmap_figure({"times": HOURS, "features": ["age", "income"],
                                                  "psi": [[0.01, None, 0.3], [0.4, 0.1, 0.0]]}, MARKERS),
        "distribution": monitoring.distribution_figure({"labels": ["a", "b"], "reference_shares": [0.5, 0.5],
                                                        "current_shares": [0.9, 0.1]}, title="age"),
        "performance": monitoring.performance_figure(_series("accuracy", [0.9, 0.8, 0.85]), label="Accuracy",
                                                     percent=True, markers=MARKERS),
        "stacked daily": monitoring.stacked_daily_figure([("churn", [(T.date(), 3)]), ("fraud", [(T.date(), 5)])],
                                                         y_title="Predictions"),
        "daily line": monitoring.daily_line_figure([(T.date(), 3), (T.date() + dt.timedelta(days=1), 4)],
                                                   name="Approvals", y_title="Approvals"),
        "live": live_figure([{"minute": timezone.now(), "requests": 4, "p50": 3.0, "p95": 9.5},
                             {"minute": timezone.now(), "requests": 0, "p50": None, "p95": None}]),
    }


@pytest.mark.parametrize("name", list(_every_chart()))
def test_plotly_accepts_every_property_a_chart_writes(name):
    figure = _every_chart()[name]
    assert figure is not None and figure.data
    emitted = json.loads(figure.to_json())
    checked = go.Figure(emitted)  # raises ValueError naming any property plotly.js does not have
    assert len(checked.data) == len(emitted["data"])
    # Titles are written the way plotly.js 3 reads them: {"text": ...}, never a bare string.
    assert '"title": "' not in json.dumps(emitted)


def test_update_layout_merges_nested_properties_like_plotly():
    figure = Figure().update_layout(xaxis={"title": "Rows", "type": "log"}, height=200)
    figure.update_layout(xaxis={"type": "linear"}, height=300)
    assert figure.layout == {"xaxis": {"title": "Rows", "type": "linear"}, "height": 300}
    assert figure.layout.xaxis.title == "Rows"


def test_a_named_colour_scale_is_spelt_out_as_plotly_py_would():
    spelt = named_colorscale("RdBu")
    assert json.loads(go.Figure(go.Heatmap(z=[[1]], colorscale="RdBu")).to_json())["data"][0]["colorscale"] == spelt
