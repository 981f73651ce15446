// Portal's own behaviour: draw Plotly charts from their JSON data islands (no inline scripts, so the
// Content-Security-Policy can forbid them), submit select-on-focus for copyable keys.
(function () {
  "use strict";

  function drawCharts(root) {
    if (typeof window.Plotly === "undefined") { return; }
    root.querySelectorAll("[data-plotly-source]").forEach(function (el) {
      if (el.dataset.drawn) { return; }
      var source = document.getElementById(el.dataset.plotlySource);
      if (!source) { return; }
      var figure = JSON.parse(source.textContent);
      window.Plotly.newPlot(el, figure.data, figure.layout, { responsive: true, displaylogo: false, displayModeBar: false });
      el.dataset.drawn = "1";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts(document);
    document.querySelectorAll("[data-select-on-focus]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });
  });
  window.addEventListener("load", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (event) { drawCharts(event.target); });
})();
