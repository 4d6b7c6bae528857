// Shoal's dashboard: reads /dashboard/api/state, re-reads it when the cluster's event stream
// says something happened, and draws nodes, tasks, services and the rest. Every name comes
// from users, so text goes in through textContent only.
"use strict";

const api = "/dashboard/api";
const $ = (sel) => document.querySelector(sel);
let state = null;
let selected = null;     // the service whose tasks and logs are shown
let logAbort = null;     // the open log stream's AbortController
let refreshTimer = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;  // through the CSSOM: the page's CSP forbids style attributes
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function ago(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  if (s < 86400) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

const cpus = (n) => (n / 1e9).toFixed(2).replace(/\.?0+$/, "");
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

async function call(method, path, body) {
  const r = await fetch(api + path, {
    method, credentials: "same-origin",
    headers: body !== undefined ? {"Content-Type": "application/json", "X-Shoal-Dashboard": "1"} : {"X-Shoal-Dashboard": "1"},
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const data = await r.json().catch(() => ({}));
  if (r.status === 403) { $("#login").hidden = false; }
  if (!r.ok) throw new Error(data.message || `${r.status}`);
  return data;
}

// ---------------------------------------------------------------- drawing
function draw() {
  if (!state) return;
  const live = state.tasks.filter((t) => t.active);
  $("#summary").textContent = `${state.nodes.length} nodes · ${state.services.length} services · ${live.filter((t) => t.state === "running").length}/${live.length} tasks running`;
  drawNodes(); drawServices(); drawStacks(); drawObjects(); drawNetworks();
  if (selected) drawDetail();
}

function taskCard(t) {
  const finished = !t.active;
  return el("div", {class: `card ${t.state}${finished ? " finished" : ""}`, "data-task-id": t.id,
                    "data-service": t.service, "data-state": t.state},
    el("div", {class: "svc"}, `${t.service}.${t.slot || ""}`),
    el("div", {}, `${t.state}${t.health ? ` (${t.health})` : ""} · ${ago(t.since)}`),
    el("div", {class: "sub"}, t.image),
    t.error ? el("div", {class: "reason"}, t.error) : null);
}

function drawNodes() {
  const showFinished = $("#show-finished").checked;
  const box = $("#nodes"); box.replaceChildren();
  const byNode = {};
  for (const t of state.tasks) {
    if (!showFinished && !t.active) continue;
    (byNode[t.node_id || ""] ||= []).push(t);
  }
  for (const n of state.nodes) {
    const tasks = (byNode[n.id] || []).sort((a, b) => a.service.localeCompare(b.service) || a.slot - b.slot);
    const cpuPct = n.nano_cpus ? Math.min(100, 100 * n.reserved_nano_cpus / n.nano_cpus) : 0;
    const memPct = n.memory_bytes ? Math.min(100, 100 * n.reserved_memory_bytes / n.memory_bytes) : 0;
    const labels = Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(", ");
    box.append(el("div", {class: `node ${n.state}`, "data-node": n.hostname},
      el("h2", {}, n.hostname, n.self ? " *" : ""),
      el("div", {},
        el("span", {class: "badge"}, n.leader ? "leader" : n.role),
        el("span", {class: `badge ${n.state}`}, n.state),
        el("span", {class: `badge ${n.availability}`}, n.availability)),
      el("div", {class: "meta"}, `${n.addr} · ${n.platform} · engine ${n.engine_version || "?"}`,
        labels ? el("div", {}, `labels: ${labels}`) : null,
        el("div", {}, `CPU reserved ${cpus(n.reserved_nano_cpus)} of ${cpus(n.nano_cpus)}`),
        el("div", {class: "bar"}, el("i", {style: `width:${cpuPct}%`})),
        el("div", {}, `memory reserved ${bytes(n.reserved_memory_bytes)} of ${bytes(n.memory_bytes)}`),
        el("div", {class: "bar"}, el("i", {style: `width:${memPct}%`})),
        n.message ? el("div", {class: "reason"}, n.message) : null),
      ...tasks.map(taskCard)));
  }
  const unplaced = byNode[""] || [];
  if (unplaced.length) {
    box.append(el("div", {class: "node", "data-node": ""}, el("h2", {}, "Not placed"),
      el("div", {class: "meta"}, "tasks no node can take yet, with the scheduler's reason"), ...unplaced.map(taskCard)));
  }
}

function drawServices() {
  const body = $("#service-table tbody"); body.replaceChildren();
  for (const s of state.services) {
    const short = s.replicas_running < s.replicas_desired;
    const pending = state.tasks.filter((t) => t.service_id === s.id && t.state === "pending" && t.error);
    const upd = s.update ? `${s.update.state}${s.update.message ? ": " + s.update.message : ""}` : "";
    const row = el("tr", {class: `clickable${selected === s.id ? " selected" : ""}`, "data-service": s.name,
                          onclick: () => { selected = s.id; draw(); openLogs(s); }},
      el("td", {}, s.name),
      el("td", {}, s.mode),
      el("td", {class: `replicas${short ? " short" : ""}`}, `${s.replicas_running}/${s.replicas_desired}`,
        s.replicas_unknown ? ` (${s.replicas_unknown} unknown)` : "",
        pending.length ? el("div", {class: "reason"}, `pending: ${pending[0].error}`) : null),
      el("td", {}, s.image),
      el("td", {}, s.ports.join(", ")),
      el("td", {}, upd),
      el("td", {},
        s.mode === "replicated" ? el("button", {"data-scale": s.name, onclick: (e) => { e.stopPropagation(); scale(s); }}, "Scale") : null,
        " ",
        s.can_rollback ? el("button", {"data-rollback": s.name, onclick: (e) => { e.stopPropagation(); rollback(s); }}, "Roll back") : null));
    body.append(row);
  }
}

function drawDetail() {
  const s = state.services.find((x) => x.id === selected);
  if (!s) { $("#service-detail").hidden = true; return; }
  $("#service-detail").hidden = false;
  $("#detail-title").textContent = `${s.name} — tasks`;
  const names = Object.fromEntries(state.nodes.map((n) => [n.id, n.hostname]));
  const body = $("#task-table tbody"); body.replaceChildren();
  for (const t of state.tasks.filter((x) => x.service_id === s.id).sort((a, b) => a.slot - b.slot || b.since - a.since)) {
    body.append(el("tr", {"data-task-id": t.id},
      el("td", {}, `${t.service}.${t.slot || names[t.node_id] || ""}`), el("td", {}, names[t.node_id] || ""),
      el("td", {}, t.desired), el("td", {}, `${t.state} ${ago(t.since)} ago`), el("td", {}, t.error || "")));
  }
}

function drawStacks() {
  const body = $("#stack-table tbody"); body.replaceChildren();
  for (const st of state.stacks) {
    const svcs = state.services.filter((s) => s.stack === st.name);
    const run = svcs.reduce((a, s) => a + s.replicas_running, 0), want = svcs.reduce((a, s) => a + s.replicas_desired, 0);
    body.append(el("tr", {}, el("td", {}, st.name), el("td", {}, svcs.map((s) => s.name).join(", ")), el("td", {}, `${run}/${want}`)));
  }
}

function drawObjects() {
  for (const [id, items] of [["#config-table", state.configs], ["#secret-table", state.secrets]]) {
    const body = $(`${id} tbody`); body.replaceChildren();
    for (const o of items) {
      body.append(el("tr", {}, el("td", {}, o.name), el("td", {}, o.version), el("td", {}, o.versions.join(", ")),
        el("td", {}, Object.entries(o.labels).map(([k, v]) => `${k}=${v}`).join(", "))));
    }
  }
}

function drawNetworks() {
  const nets = $("#network-table tbody"); nets.replaceChildren();
  for (const n of state.networks) nets.append(el("tr", {}, el("td", {}, n.name), el("td", {}, n.driver), el("td", {}, n.subnet), el("td", {}, n.stack)));
  const vols = $("#volume-table tbody"); vols.replaceChildren();
  for (const v of state.volumes) vols.append(el("tr", {}, el("td", {}, v.name), el("td", {}, v.node), el("td", {}, v.driver)));
}

function addEvent(ev) {
  const list = $("#event-list");
  const a = Object.entries(ev.attributes || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  list.prepend(el("li", {"data-type": ev.type, "data-action": ev.action},
    `${new Date(ev.time * 1000).toLocaleTimeString()} ${ev.type} ${ev.action} ${ev.id.slice(0, 12)} (${a})`));
  while (list.children.length > 300) list.lastChild.remove();
}

// ---------------------------------------------------------------- reading
async function refresh() {
  try {
    state = await call("GET", "/state");
    $("#login").hidden = true;
    draw();
  } catch (e) { console.warn("state:", e); }
}

function soon() {  // many events arrive together: one read for the burst
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 150);
}

function follow() {
  const es = new EventSource(api + "/events");
  es.onopen = () => { $("#live").className = "live on"; $("#live").textContent = "live"; };
  es.onerror = () => { $("#live").className = "live off"; $("#live").textContent = "reconnecting"; };
  es.onmessage = (m) => { addEvent(JSON.parse(m.data)); soon(); };
}

async function openLogs(s) {
  if (logAbort) logAbort.abort();
  const ctl = logAbort = new AbortController();
  const pre = $("#logs"); pre.textContent = "";
  try {
    const r = await fetch(`${api}/services/${encodeURIComponent(s.id)}/logs?tail=200&follow=1`, {signal: ctl.signal});
    const reader = r.body.getReader(); const dec = new TextDecoder();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      pre.textContent += dec.decode(value, {stream: true});
      if (pre.textContent.length > 200000) pre.textContent = pre.textContent.slice(-150000);
      pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) { if (e.name !== "AbortError") pre.textContent += `\n[logs: ${e.message}]`; }
}

// ---------------------------------------------------------------- changing (asks first)
function ask(text, withReplicas, value) {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-text").textContent = text;
    $("#confirm-field").hidden = !withReplicas;
    $("#confirm-replicas").value = value ?? "";
    d.onclose = () => resolve(d.returnValue === "ok" ? (withReplicas ? Number($("#confirm-replicas").value) : true) : null);
    d.showModal();
  });
}

async function scale(s) {
  const n = await ask(`Scale ${s.name} (now ${s.replicas_desired} replicas) to:`, true, s.replicas_desired);
  if (n === null || !Number.isInteger(n) || n < 0) return;
  try { await call("POST", `/services/${encodeURIComponent(s.id)}/scale`, {replicas: n}); soon(); }
  catch (e) { alert(`Scale failed: ${e.message}`); }
}

async function rollback(s) {
  if (await ask(`Roll ${s.name} back to its previous spec?`, false) === null) return;
  try { await call("POST", `/services/${encodeURIComponent(s.id)}/rollback`, {}); soon(); }
  catch (e) { alert(`Rollback failed: ${e.message}`); }
}

// ---------------------------------------------------------------- tabs
function showTab() {
  const tab = (location.hash || "#cluster").slice(1);
  for (const s of document.querySelectorAll("section.tab")) s.hidden = s.id !== tab;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.tab === tab);
}

window.addEventListener("hashchange", showTab);
document.addEventListener("DOMContentLoaded", () => {
  showTab();
  $("#show-finished").addEventListener("change", draw);
  refresh();
  follow();
  setInterval(refresh, 10000);  // ages move on, and a missed event is caught up
});
