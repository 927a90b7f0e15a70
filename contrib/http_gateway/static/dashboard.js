// The live dashboard: polls /v1/dashboard/data (every 2 s, or ?interval=ms)
// and renders the numbers and two Chart.js charts.  Rates per second are
// the difference of the totals between two polls.
"use strict";

const params = new URLSearchParams(location.search);
const interval = Math.max(250, Number(params.get("interval")) || 2000);
const keep = 60; // points on the rate chart

const fmt = new Intl.NumberFormat("en-US");
const $ = (id) => document.getElementById(id);

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(2) + " ms";
  return s.toFixed(2) + " s";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

const rateChart = new Chart($("rate-chart"), {
  type: "line",
  data: { labels: [], datasets: [
    { label: "allowed / s", data: [], borderColor: "#3b82f6", tension: 0.2, pointRadius: 0 },
    { label: "denied / s", data: [], borderColor: "#ef4444", tension: 0.2, pointRadius: 0 },
  ] },
  options: { animation: false, maintainAspectRatio: false,
             scales: { x: { ticks: { maxTicksLimit: 6, maxRotation: 0 } }, y: { beginAtZero: true } },
             plugins: { title: { display: true, text: "decisions per second" } } },
});

const historyChart = new Chart($("history-chart"), {
  type: "bar",
  data: { labels: [], datasets: [] },
  options: { animation: false, maintainAspectRatio: false,
             scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
             plugins: { title: { display: true, text: "tokens per minute, last hour, by user and endpoint" } } },
});

const palette = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#84cc16", "#ec4899"];
let previous = null;

function render(d) {
  const m = d.metrics;
  $("allowed-total").textContent = fmt.format(m.allowed_requests);
  $("denied-total").textContent = fmt.format(m.denied_requests);
  $("latency-p50").textContent = seconds(m.check_time_p50);
  $("latency-p95").textContent = seconds(m.check_time_p95);
  $("latency-p99").textContent = seconds(m.check_time_p99);
  $("queue-depth").textContent = fmt.format(m.usage_queue_depth);
  if (previous) {
    const dt = (d.at - previous.at) || 1;
    const a = Math.max(0, (m.allowed_requests - previous.metrics.allowed_requests) / dt);
    const n = Math.max(0, (m.denied_requests - previous.metrics.denied_requests) / dt);
    $("allowed-rate").textContent = fmt.format(Math.round(a));
    $("denied-rate").textContent = fmt.format(Math.round(n));
    rateChart.data.labels.push(new Date(d.at * 1000).toLocaleTimeString());
    rateChart.data.datasets[0].data.push(a);
    rateChart.data.datasets[1].data.push(n);
    if (rateChart.data.labels.length > keep) {
      rateChart.data.labels.shift();
      rateChart.data.datasets.forEach((s) => s.data.shift());
    }
    rateChart.update();
  }
  previous = d;

  const users = $("top-users").tBodies[0];
  users.replaceChildren();
  for (const u of d.top_users) {
    const tr = document.createElement("tr");
    tr.dataset.user = u.user_id;
    tr.dataset.endpoint = u.api_endpoint || "";
    tr.dataset.kind = u.limit_kind;
    cell(tr, u.user_id);
    cell(tr, u.api_endpoint || "–");
    cell(tr, u.limit_kind);
    cell(tr, fmt.format(u.used), "num used");
    cell(tr, fmt.format(u.limit), "num limit");
    cell(tr, fmt.format(u.remaining), "num remaining");
    const share = u.limit > 0 ? Math.min(1, u.used / u.limit) : 0;
    const bar = document.createElement("div");
    bar.className = "bar" + (share >= 0.8 ? " hot" : "");
    const fill = document.createElement("div");
    fill.style.width = (share * 100).toFixed(1) + "%";
    bar.appendChild(fill);
    cell(tr, "").appendChild(bar);
    cell(tr, u.reset_at ? new Date(u.reset_at).toLocaleString() : "–");
    users.appendChild(tr);
  }

  const alerts = $("alerts").tBodies[0];
  alerts.replaceChildren();
  for (const a of d.alerts) {
    const tr = document.createElement("tr");
    tr.dataset.kind = a.kind;
    cell(tr, new Date(a.created_at).toLocaleString());
    cell(tr, a.kind);
    cell(tr, a.user_id || "–");
    cell(tr, a.api_endpoint || "–");
    cell(tr, a.scope || "–");
    alerts.appendChild(tr);
  }
  if (!d.alerts.length) {
    const tr = document.createElement("tr");
    cell(tr, "no alerts").colSpan = 5;
    alerts.appendChild(tr);
  }

  // History: one stacked series per (user, endpoint), minutes on the x axis.
  const minutes = [...new Set(d.history.map((h) => h.minute))].sort();
  const series = new Map();
  for (const h of d.history) {
    const key = h.user_id + (h.api_endpoint ? " · " + h.api_endpoint : "");
    if (!series.has(key)) series.set(key, new Map());
    series.get(key).set(h.minute, h.tokens);
  }
  historyChart.data.labels = minutes.map((t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  historyChart.data.datasets = [...series.entries()].map(([label, byMinute], i) => ({
    label, data: minutes.map((t) => byMinute.get(t) || 0), backgroundColor: palette[i % palette.length],
  }));
  historyChart.update();
  // What the chart shows, for tests and scripts that read the page.
  $("history-chart").dataset.series = String(historyChart.data.datasets.length);
  $("history-chart").dataset.tokens = String(d.history.reduce((sum, h) => sum + Number(h.tokens), 0));

  $("updated").textContent = "updated " + new Date(d.at * 1000).toLocaleTimeString();
  $("updated").dataset.polls = String(Number($("updated").dataset.polls || 0) + 1);
  $("error").textContent = "";
}

async function poll() {
  try {
    const r = await fetch("/v1/dashboard/data", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    $("error").textContent = "cannot load data: " + e.message;
  } finally {
    setTimeout(poll, interval);
  }
}
poll();
