// The console's own script: the CSRF header on htmx's requests, and the
// charts (Chart.js) drawn from each canvas's data-series, again after
// every live swap.
"use strict";

(function () {
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#e377c2", "#7f7f7f", "#bcbd22"];

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

  // scoreChart: the share of drifted features per time slice (gaps
  // where a slice had no data), red points where it reached the
  // threshold, and the threshold as a dashed line.
  function scoreChart(canvas, s) {
    return new Chart(canvas, {
      type: "line",
      data: {
        labels: s.labels,
        datasets: [
          { label: "share drifted", data: s.share, borderColor: colors[0], backgroundColor: s.share.map((v) => (v !== null && v >= s.threshold ? "#d62728" : colors[0])), pointRadius: 4, tension: 0, spanGaps: false },
          { label: "threshold", data: s.labels.map(() => s.threshold), borderColor: "#000000", borderDash: [6, 4], pointRadius: 0 },
        ],
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false, scales: { y: { beginAtZero: true, suggestedMax: 1 } } },
    });
  }

  // barsChart: bars per label (an experiment's arms), one colour per
  // label when there is one series, per series otherwise; blue and
  // orange, neither of which reads as "bad".
  const armColors = [colors[0], colors[3]];
  function barsChart(canvas, s) {
    const names = Object.keys(s.lines).sort();
    return new Chart(canvas, {
      type: "bar",
      data: {
        labels: s.labels,
        datasets: names.map((n, i) => ({ label: n, data: s.lines[n], backgroundColor: names.length === 1 ? s.labels.map((_, j) => armColors[j % armColors.length]) : armColors[i % armColors.length] })),
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: names.length > 1 } }, scales: { y: { beginAtZero: true } } },
    });
  }

  // Chart.js loads on the first page that has a chart.
  let chartLoading = null;
  function loadChart() {
    if (!chartLoading) {
      chartLoading = new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = "/console/static/vendor/chart.umd.min.js";
        s.onload = resolve;
        s.onerror = () => reject(new Error("chart.umd.min.js did not load"));
        document.head.appendChild(s);
      });
    }
    return chartLoading;
  }

  function drawCharts(root) {
    const canvases = root.querySelectorAll("canvas[data-chart]");
    if (canvases.length === 0) return;
    if (typeof Chart === "undefined") {
      loadChart().then(() => drawCharts(root));
      return;
    }
    canvases.forEach((canvas) => {
      const old = Chart.getChart(canvas);
      if (old) old.destroy();
      const s = JSON.parse(canvas.dataset.series);
      if (canvas.dataset.chart === "gates") gatesChart(canvas, s);
      else if (canvas.dataset.chart === "score") scoreChart(canvas, s);
      else if (canvas.dataset.chart === "bars") barsChart(canvas, s);
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
