// The console's own script: the CSRF header on htmx's requests, and the
// charts (Chart.js) drawn from each canvas's data-series, again after
// every live swap.
"use strict";

(function () {
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

  function lineChart(canvas, s) {
    const names = Object.keys(s.lines).sort();
    return new Chart(canvas, {
      type: "line",
      data: {
        labels: s.labels,
        datasets: names.map((n, i) => ({ label: n, data: s.lines[n], borderColor: colors[i % colors.length], backgroundColor: colors[i % colors.length], pointRadius: 2, tension: 0 })),
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
    });
  }

  // gatesChart: one bar per gate, its value over its threshold; red
  // where it breaches, grey while waiting, and the threshold as a line.
  function gatesChart(canvas, gates) {
    const fill = { pass: "#2ca02c", breach: "#d62728", waiting: "#999999", skipped: "#cccccc" };
    return new Chart(canvas, {
      data: {
        labels: gates.map((g) => g.gate),
        datasets: [
          { type: "bar", label: "value ÷ threshold", data: gates.map((g) => g.ratio), backgroundColor: gates.map((g) => fill[g.status] || "#999999") },
          { type: "line", label: "threshold", data: gates.map(() => 1), borderColor: "#000000", borderDash: [6, 4], pointRadius: 0 },
        ],
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true } } },
    });
  }

  function drawCharts(root) {
    if (typeof Chart === "undefined") return;
    root.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
      const old = Chart.getChart(canvas);
      if (old) old.destroy();
      const s = JSON.parse(canvas.dataset.series);
      if (canvas.dataset.chart === "gates") gatesChart(canvas, s);
      else lineChart(canvas, s);
    });
  }

  document.addEventListener("DOMContentLoaded", () => drawCharts(document));
  document.addEventListener("htmx:afterSwap", (e) => drawCharts(e.detail.target));
  document.addEventListener("htmx:configRequest", (e) => {
    const csrf = document.body.dataset.csrf;
    if (csrf) e.detail.headers["X-CSRF-Token"] = csrf;
  });
  // A live refresh waits while the user types in a field of the page.
  document.addEventListener("htmx:beforeRequest", (e) => {
    const main = document.getElementById("main");
    if (e.detail.elt === main && main.contains(document.activeElement) && document.activeElement.matches("input, select, textarea")) {
      e.preventDefault();
    }
  });
})();
