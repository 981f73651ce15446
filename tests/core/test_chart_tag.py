"""The {% plotly_chart %} data island: Plotly's JSON, readable back, unable to close its <script> element."""

from __future__ import annotations

import json
import re

from apps.core.charts import Figure, trace
from apps.core.templatetags.portal import plotly_chart

HOSTILE = '</script><script>alert("x")</script> & <!-- ünïcode'


def test_a_hostile_label_cannot_leave_the_data_island_and_reads_back_unchanged():
    figure = Figure(trace("bar", x=[HOSTILE, "b"], y=[1, 2], name=HOSTILE))
    html = str(plotly_chart(figure, "chart-1", 'Rows per "value"'))
    assert html.count("</script>") == 1 and "<script>" not in html and "<!--" not in html
    island = re.fullmatch(r'<div id="chart-1" class="plotly-chart" role="img" aria-label="Rows per &quot;value&quot;" '
                          r'data-plotly-source="chart-1-data"></div><script id="chart-1-data" '
                          r'type="application/json">(.*)</script>', html, re.S)
    assert island is not None
    data = json.loads(island.group(1))
    assert data["data"][0]["name"] == HOSTILE and data["data"][0]["x"] == [HOSTILE, "b"]
    assert data == json.loads(figure.to_json())
