// The guard's status page. Reads GET status, studies/{uid} and audit?study= (relative URLs, so
// the page also works behind a reverse proxy under a sub-path). Writes only textContent: patient
// and study data never become markup. No library, nothing fetched from elsewhere.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "guard-token";
const UID_PATTERN = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;
const SVG_NS = "http://www.w3.org/2000/svg";

class Unauthorized extends Error {}

function $(id) { return document.getElementById(id); }

async function getJSON(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) { headers.Authorization = "Bearer " + token; }
  const answer = await fetch(path, { headers, cache: "no-store" });
  if (answer.status === 401) { throw new Unauthorized(path); }
  const body = await answer.json().catch(() => null);
  if (!answer.ok) {
    const why = body && (body.detail || body.title) ? (body.detail || body.title) : answer.statusText;
    throw new Error(path.split("?")[0] + ": " + answer.status + " " + why);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function askForToken() {
  $("token-box").hidden = false;
  $("token-input").focus();
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}

function fillTable(tbodyId, items, render, emptyText) {
  const tbody = $(tbodyId);
  tbody.replaceChildren();
  if (items.length === 0) {
    const row = tbody.insertRow();
    const td = cell(row, emptyText, "muted");
    td.colSpan = 6;
    return;
  }
  for (const item of items) { render(tbody.insertRow(), item); }
}

function when(iso) {
  if (!iso) { return ""; }
  const date = new Date(iso);
  return isNaN(date) ? iso : date.toLocaleString();
}

function duration(seconds) {
  if (seconds < 90) { return Math.round(seconds) + " s"; }
  if (seconds < 5400) { return Math.round(seconds / 60) + " min"; }
  if (seconds < 172800) { return (seconds / 3600).toFixed(1) + " h"; }
  return (seconds / 86400).toFixed(1) + " d";
}

function renderArchive(archive) {
  const badge = $("archive-state");
  if (archive.reachable === null) {
    badge.className = "badge unknown";
    badge.textContent = archive.probe_interval > 0 ? "archive: not probed yet" : "archive: probe off";
  } else if (archive.reachable) {
    badge.className = "badge ok";
    badge.textContent = "archive reachable (" + archive.latency_ms + " ms)";
  } else {
    badge.className = "badge bad";
    badge.textContent = "archive UNREACHABLE";
  }
  badge.title = archive.peer + (archive.checked_at ? ", checked " + when(archive.checked_at) : "") + (archive.error ? ": " + archive.error : "");
}

function renderChart(throughput) {
  const svg = $("throughput-chart");
  svg.replaceChildren();
  const width = 600, height = 120, top = 12, bottom = 108;
  const peak = Math.max(1, ...throughput.received, ...throughput.confirmed);
  const slot = width / throughput.minutes;
  const scale = (n) => (bottom - top) * n / peak;
  const add = (tag, attrs) => {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) { el.setAttribute(k, v); }
    svg.appendChild(el);
    return el;
  };
  add("line", { x1: 0, y1: bottom, x2: width, y2: bottom, class: "axis" });
  throughput.received.forEach((n, i) => {
    const bar = add("rect", { x: i * slot + 0.5, y: bottom - scale(n), width: slot / 2 - 0.5, height: scale(n), class: "received" });
    bar.appendChild(document.createElementNS(SVG_NS, "title")).textContent = n + " received";
  });
  throughput.confirmed.forEach((n, i) => {
    const bar = add("rect", { x: i * slot + slot / 2, y: bottom - scale(n), width: slot / 2 - 0.5, height: scale(n), class: "confirmed" });
    bar.appendChild(document.createElementNS(SVG_NS, "title")).textContent = n + " confirmed";
  });
  add("text", { x: 2, y: 9 }).textContent = peak + "/min";
  add("text", { x: 2, y: height - 2 }).textContent = "-60 min";
  add("text", { x: width - 24, y: height - 2 }).textContent = "now";
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  $("throughput-total").textContent =
    sum(throughput.received) + " received, " + sum(throughput.confirmed) + " confirmed in the last hour";
}

function renderStatus(status) {
  $("version").textContent = "version " + status.version;
  $("updated").textContent = "updated " + when(status.generated_at);
  $("count-confirmed").textContent = status.confirmed;
  $("count-pending").textContent = status.pending;
  $("count-dead").textContent = status.dead_lettered;
  $("count-dead").parentElement.classList.toggle("alert", status.dead_lettered > 0);
  $("queue-depth").textContent = status.queue_depth;
  const oldest = status.oldest_unconfirmed;
  $("oldest-age").textContent = oldest ? duration(oldest.age_seconds) : "none";
  $("oldest-detail").textContent = oldest ? oldest.state + ", study " + oldest.study_uid : "every instance is confirmed";
  renderArchive(status.archive);
  renderChart(status.throughput);
  $("node-self").textContent = "answered by node " + status.node;
  fillTable("nodes", status.nodes, (row, n) => {
    cell(row, n.node);
    cell(row, n.state, n.state === "lost" ? "refused" : "");
    cell(row, n.ready ? "yes" : "no");
    cell(row, when(n.last_seen_at));
    cell(row, n.queue);
    cell(row, n.unconfirmed);
    cell(row, n.version);
  }, "no node has registered");
  fillTable("decisions", status.recent_decisions, (row, d) => {
    cell(row, when(d.at));
    cell(row, d.study_uid, "uid");
    cell(row, d.channel);
    const decision = d.event === "delete.permitted" ? "permitted" : "refused";
    cell(row, decision + (d.outcome === "failure" ? " (backend failed)" : ""), decision);
    cell(row, d.reasons.join(", "));
    cell(row, d.actor);
  }, "no delete decisions yet");
  fillTable("dead-letters", status.dead_letters, (row, d) => {
    cell(row, when(d.updated_at));
    cell(row, d.study_uid, "uid");
    cell(row, d.sop_instance_uid, "uid");
    cell(row, d.status);
    cell(row, d.reason);
    cell(row, d.attempts);
  }, "no dead letters");
}

async function refresh() {
  try {
    renderStatus(await getJSON("status"));
    showError("");
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (err) {
    if (err instanceof Unauthorized) { askForToken(); } else { showError("cannot read status: " + err.message); }
  }
}

function auditDetail(record) {
  const d = record.detail || {};
  if (d.reasons && d.reasons.length) { return d.reasons.join(", "); }
  return d.reason || d.sentence || d.receipt || d.alert || d.channel || "";
}

async function showStudy(uid) {
  const result = $("study-result");
  if (!UID_PATTERN.test(uid) || uid.length > 64) {
    showError("not a valid Study Instance UID: " + uid.slice(0, 80));
    result.hidden = true;
    return;
  }
  try {
    const study = await getJSON("studies/" + encodeURIComponent(uid));
    const audit = await getJSON("audit?limit=1000&study=" + encodeURIComponent(uid));
    showError("");
    const state = $("study-state");
    state.textContent = !study.known ? "unknown to the guard" : study.deletable.decision === "permitted" ? "deletable" : "not deletable";
    state.className = study.deletable.decision;
    $("study-sentence").textContent =
      study.deletable.sentence + (study.deletable.reasons.length ? " [" + study.deletable.reasons.join(", ") + "]" : "");
    fillTable("study-counts", Object.entries(study.counts), (row, [name, n]) => { cell(row, name); cell(row, n); }, "no instances");
    fillTable("study-audit", audit.records, (row, r) => {
      cell(row, when(r.at));
      cell(row, r.event);
      cell(row, r.outcome);
      cell(row, r.actor);
      cell(row, r.sop_instance_uid, "uid");
      cell(row, auditDetail(r));
    }, "no audit records");
    result.dataset.uid = uid;
    result.hidden = false;
  } catch (err) {
    if (err instanceof Unauthorized) { askForToken(); } else { showError("cannot show study: " + err.message); }
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("study-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showStudy($("study-uid").value.trim());
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    $("token-box").hidden = true;
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
});
