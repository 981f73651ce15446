"""Plotly figures as plain data: the part of plotly.graph_objects.Figure the portal's charts use, without its
validation. plotly.py checks every property on every assignment (and parses `xaxis_title`-style paths), which cost
a monitoring page ~130 ms of its ~200 and a dataset page ~15-20 ms per chart; plotly.js draws the same JSON.

Builders in each app's charts.py write properties the way plotly.js reads them (nested dicts, `title` as a string
or {"text": ...}); the page embeds `Figure.to_json()` with the `plotly_chart` template tag.
"""

from __future__ import annotations

from plotly.colors import get_colorscale
from plotly.io.json import to_json_plotly


class Props(dict):
    """Plotly properties as plain data, readable as attributes (trace.name) like plotly.py's objects."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def trace(kind: str, **props) -> Props:
    return Props(type=kind, **props)


class Figure:
    """Traces plus a layout; update_layout merges nested dicts as plotly.py's does."""

    def __init__(self, *traces: Props) -> None:
        self.data = list(traces)
        self.layout = Props()

    def add_trace(self, props: Props) -> Figure:
        self.data.append(props)
        return self

    def add_scatter(self, **props) -> Figure:
        return self.add_trace(trace("scatter", **props))

    def add_bar(self, **props) -> Figure:
        return self.add_trace(trace("bar", **props))

    def update_layout(self, **props) -> Figure:
        _merge(self.layout, props)
        return self

    def to_json(self) -> str:
        return to_json_plotly({"data": [_titles(t) for t in self.data], "layout": _titles(self.layout)})


def named_colorscale(name: str) -> list[list]:
    """A named colour scale as plotly.py spells it out ("RdBu" in plotly.js is a different, older scale)."""
    return [[round(position, 6), colour] for position, colour in get_colorscale(name)]


def _titles(props: dict) -> dict:
    """`title="x"` as plotly.js 3 wants it, {"text": "x"} (plotly.py's validation did this for us)."""
    out = {}
    for key, value in props.items():
        if key == "title" and isinstance(value, str):
            value = {"text": value}
        elif isinstance(value, dict):
            value = _titles(value)
        out[key] = value
    return out


def _merge(into: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = Props(value) if isinstance(value, dict) else value
