// The console's pages, filled from the JSON API (/api/v1) and kept live by polling every 2 s.
// Every value is set with textContent (never innerHTML): a job name or an output tail stays text.
"use strict";

const API = "/api/v1";
const POLL_MS = 2000;
const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  const r = await fetch(API + path, init);
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("logged out"); }
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "cls") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function show(id, message) {
  const e = document.getElementById(id);
  if (!e) return;
  e.textContent = message || "";
  e.hidden = !message;
}

function flash(message) {
  show("flash", message);
  if (message) setTimeout(() => show("flash", ""), 4000);
}

const fmtTime = (t) => (t === null || t === undefined ? "–" : new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z");
const fmtDur = (s) => (s === null || s === undefined ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`);
const dash = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));

function stateBadge(state) {
  return el("span", { cls: `state st-${state || "none"}`, text: state || "–" });
}

function strip(states) {
  const s = el("span", { cls: "strip" });
  for (const st of states) s.append(el("span", { cls: `sq st-${st}`, title: st }));
  return s;
}

function poll(fn) {
  let timer = null;
  const tick = async () => {
    try { await fn(); } catch (e) { /* shown by fn */ }
    timer = setTimeout(tick, document.hidden ? POLL_MS * 5 : POLL_MS);
  };
  tick();
  return () => clearTimeout(timer);
}

// A poll that brings the same data leaves the DOM alone: a re-render would drop the reader's text
// selection (an output tail being copied) and the button under the pointer.
const rendered = new WeakMap();
function replaceRows(parent, rows) {
  const sig = rows.map((r) => r.outerHTML).join("");
  if (rendered.get(parent) === sig) return;
  rendered.set(parent, sig);
  parent.replaceChildren(...rows);
}

// --- jobs ------------------------------------------------------------------------------------------
function jobsPage() {
  const tbody = document.querySelector("#jobs-table tbody");
  const filter = document.getElementById("job-filter");
  let jobs = [], sortKey = "name", sortDir = 1;
  const key = {
    name: (j) => j.name, schedule: (j) => j.schedule, tz: (j) => j.tz, level: (j) => j.level, kind: (j) => j.kind,
    paused: (j) => (j.paused ? 1 : 0), next: (j) => (j.next ? j.next.utc : "~"), last: (j) => (j.last ? j.last.state : "~"),
  };
  const render = () => {
    const q = filter.value.trim().toLowerCase();
    const shown = jobs.filter((j) => !q || [j.name, j.schedule, j.words, j.kind, j.tz, j.target].join(" ").toLowerCase().includes(q))
      .sort((a, b) => (key[sortKey](a) < key[sortKey](b) ? -sortDir : key[sortKey](a) > key[sortKey](b) ? sortDir : 0));
    replaceRows(tbody, shown.map((j) => el("tr", { "data-job": j.name },
      el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(j.name)}`, text: j.name })),
      el("td", {}, el("code", { text: j.schedule }), el("div", { cls: "muted small", text: j.words })),
      el("td", { text: j.tz }), el("td", { text: j.level }), el("td", { text: j.kind }),
      el("td", { cls: "job-state" }, el("span", { cls: j.paused ? "pill paused" : "pill active", text: j.paused ? "paused" : "active" })),
      el("td", {}, j.next ? el("div", { text: j.next.local }) : "–", j.next ? el("div", { cls: "muted small", text: j.next.utc }) : null),
      el("td", {}, j.last ? stateBadge(j.last.state) : "–"),
      el("td", {}, strip(j.strip || [])))));
    document.getElementById("job-count").textContent = `${shown.length} of ${jobs.length}`;
    show("no-jobs", jobs.length ? "" : "No jobs yet.");
  };
  document.querySelectorAll("#jobs-table th.sortable").forEach((th) => th.addEventListener("click", () => {
    sortDir = sortKey === th.dataset.sort ? -sortDir : 1;
    sortKey = th.dataset.sort;
    document.querySelectorAll("#jobs-table th").forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
    render();
  }));
  filter.addEventListener("input", render);
  poll(async () => { jobs = (await api("GET", "/jobs")).jobs; render(); });

  const form = document.getElementById("job-form");
  if (form) form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const body = { name: f.get("name"), schedule: f.get("schedule"), [f.get("kind")]: f.get("target"),
                   tz: f.get("tz") || "UTC", level: Number(f.get("level")), concurrency: f.get("concurrency"),
                   retries: Number(f.get("retries") || 0) };
    if (f.get("timeout")) body.timeout = Number(f.get("timeout"));
    try {
      const r = await api("PUT", `/jobs/${encodeURIComponent(body.name)}`, body);
      show("form-error", "");
      flash(`${r.created ? "created" : "replaced"} job ${r.job}`);
      jobs = (await api("GET", "/jobs")).jobs; render();
    } catch (e) { show("form-error", e.message); }
  });
}

// --- one job ---------------------------------------------------------------------------------------
function jobPage() {
  const name = document.getElementById("job").dataset.job;
  const path = `/jobs/${encodeURIComponent(name)}`;
  const spec = document.getElementById("spec");
  const renderSpec = (j) => {
    const rows = [["schedule", `${j.schedule}  (${j.words})`], ["kind", j.kind], ["target", j.target], ["zone", j.tz],
      ["level", j.level], ["concurrency", j.concurrency], ["timeout", j.timeout === null ? "none" : `${j.timeout} s`],
      ["retries", j.retries], ["starting deadline", `${j.starting_deadline} s`], ["catch-up", `${j.catchup} (cap ${j.catchup_cap})`],
      ["jitter", `${j.jitter} s`], ["on node loss", j.on_node_loss], ["running now", j.running]];
    for (const k of ["start_at", "end_at", "max_runs"]) if (j[k] !== null && j[k] !== undefined) rows.push([k.replace("_", " "), j[k]]);
    replaceRows(spec, rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: dash(v) })]));
    const st = document.getElementById("job-state");
    st.textContent = j.paused ? "paused" : "active";
    st.className = `pill ${j.paused ? "paused" : "active"}`;
    const p = document.getElementById("btn-pause"), r = document.getElementById("btn-resume");
    if (p) p.hidden = j.paused;
    if (r) r.hidden = !j.paused;
  };
  const load = async () => {
    try {
      const [j, runs, next] = await Promise.all([api("GET", path), api("GET", `/runs?job=${encodeURIComponent(name)}&limit=50`),
                                                 api("GET", `${path}/next?n=10`)]);
      renderSpec(j);
      // the schedule's firings whatever the pause (as `etcdcron next`): say that none of them fires while paused
      show("next-note", j.paused ? "(paused: none fires until resumed)" : "");
      replaceRows(document.querySelector("#next-table tbody"), next.firings.length
        ? next.firings.map((f) => el("tr", {}, el("td", { text: f.local }), el("td", { text: f.utc }),
                                     el("td", { cls: "muted small", text: f.note || "" })))
        : [el("tr", {}, el("td", { text: "none: the schedule has ended" }))]);
      replaceRows(document.querySelector("#history-table tbody"), runs.runs.map((r) => el("tr", { "data-slot": r.slot },
        el("td", { text: r.slot_utc }), el("td", {}, stateBadge(r.state)), el("td", { text: dash(r.node) }),
        el("td", { text: dash(r.fence) }), el("td", { text: dash(r.attempt) }), el("td", { text: fmtTime(r.started) }),
        el("td", { text: fmtDur(r.duration) }), el("td", { text: dash(r.exit_code) }),
        el("td", {}, r.output ? el("pre", { cls: "tail", text: r.output }) : "–"))));
      show("job-error", "");
    } catch (e) { show("job-error", e.message); }
  };
  poll(load);
  document.querySelectorAll("#job-actions button").forEach((b) => b.addEventListener("click", async () => {
    const action = b.dataset.action;
    if ((action === "delete" || action === "kill") && !confirm(`${action} job ${name}?`)) return;
    try {
      if (action === "delete") { await api("DELETE", path); location.href = "/jobs"; return; }
      await api("POST", `${path}/${action}`);
      flash(`${action}: done`);
      await load();
    } catch (e) { show("job-error", e.message); }
  }));
}

// --- runs ------------------------------------------------------------------------------------------
function runsPage() {
  const form = document.getElementById("runs-filter");
  const tbody = document.querySelector("#runs-table tbody");
  const more = document.getElementById("runs-more");
  let older = [], cursor = null;
  const query = (extra) => {
    const q = new URLSearchParams();
    for (const k of ["job", "state", "node"]) { const v = form.elements[k].value.trim(); if (v) q.set(k, v); }
    for (const k of ["since", "until"]) { const v = form.elements[k].value; if (v) q.set(k, v + "Z"); }
    q.set("limit", "50");
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return `/runs?${q}`;
  };
  const row = (r) => el("tr", { "data-job": r.job, "data-slot": r.slot, "data-state": r.state, "data-node": r.node },
    el("td", { text: r.slot_utc }), el("td", {}, el("a", { href: `/jobs/${encodeURIComponent(r.job)}`, text: r.job })),
    el("td", {}, stateBadge(r.state)), el("td", { text: dash(r.node) }), el("td", { text: dash(r.fence) }),
    el("td", { text: dash(r.attempt) }), el("td", { text: fmtDur(r.duration) }), el("td", { text: dash(r.exit_code) }),
    el("td", { text: dash(r.reason) }));
  let first = [];
  // newer runs push the first page down into the older ones already fetched: show each run once
  const render = () => {
    const seen = new Set(first.map((r) => `${r.job}@${r.slot}`));
    replaceRows(tbody, [...first, ...older.filter((r) => !seen.has(`${r.job}@${r.slot}`))].map(row));
  };
  const load = async () => {
    try {
      const d = await api("GET", query());
      first = d.runs;
      if (!older.length) { cursor = d.next_cursor; more.hidden = !cursor; }
      document.getElementById("runs-source").textContent = d.source === "mongo" ? "from the MongoDB archive" : "etcd's recent window";
      render();
      show("runs-error", "");
    } catch (e) { show("runs-error", e.message); }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); older = []; load(); });
  more.addEventListener("click", async () => {
    try {
      const d = await api("GET", query({ cursor }));
      older = older.concat(d.runs);
      cursor = d.next_cursor; more.hidden = !cursor;
      render();
    } catch (e) { show("runs-error", e.message); }
  });
  poll(load);
}

// --- nodes -----------------------------------------------------------------------------------------
function nodesPage() {
  const canOperate = document.body.dataset.canOperate === "yes";
  const tbody = document.querySelector("#nodes-table tbody");
  const drain = async (id) => {
    if (!confirm(`Drain node ${id}? It stops claiming, finishes its runs and leaves.`)) return;
    try { await api("POST", `/nodes/${encodeURIComponent(id)}/drain`); flash(`draining node ${id}`); } catch (e) { show("nodes-error", e.message); }
  };
  poll(async () => {
    try {
      const d = await api("GET", "/nodes");
      document.getElementById("leader-line").textContent = d.leader ? `leader: ${d.leader}` : "no leader";
      replaceRows(tbody, d.nodes.map((n) => {
        const action = canOperate && !n.draining ? el("button", { cls: "small", "data-drain": n.id, text: "Drain" }) : null;
        if (action) action.addEventListener("click", () => drain(n.id));
        return el("tr", { "data-node": n.id },
          el("td", { text: n.id }),
          el("td", {}, el("span", { cls: n.leader ? "pill leader" : "pill", text: n.leader ? "leader" : n.draining ? "draining" : "member" })),
          el("td", { text: (n.levels || []).join(", ") }), el("td", { text: dash(n.host) }), el("td", { text: dash(n.pid) }),
          el("td", { text: n.lease_ttl === null || n.lease_ttl === undefined ? "–" : `${n.lease_ttl} s` }),
          el("td", {}, n.running.length ? el("span", { text: n.running.map((r) => `${r.job}@${new Date(r.slot * 1000).toISOString().slice(11, 19)}`).join(", ") }) : "–"),
          el("td", {}, action));
      }));
      show("no-nodes", d.nodes.length ? "" : "No live node.");
      show("nodes-error", "");
    } catch (e) { show("nodes-error", e.message); }
  });
}

// --- cluster ---------------------------------------------------------------------------------------
function clusterPage() {
  const canOperate = document.body.dataset.canOperate === "yes";
  const act = async (what, level) => {
    const kill = document.getElementById("degrade-kill");
    try {
      await api("POST", `/cluster/${what}`, what === "degrade" ? { level, kill: !!(kill && kill.checked) } : { level });
      flash(`${what} level ${level}: done`);
      await load();
    } catch (e) { show("cluster-error", e.message); }
  };
  const card = (label, value, id, note) => el("div", { cls: "card", id }, el("div", { cls: "muted small", text: label }),
    el("div", { cls: "big", text: dash(value) }), note ? el("div", { cls: "muted small", text: note }) : null);
  const load = async () => {
    try {
      const s = await api("GET", "/cluster");
      const running = typeof s.running === "number" ? s.running : 0;
      replaceRows(document.getElementById("cluster-cards"), [
        card("etcd revision", s.etcd.revision, "card-revision"), card("etcd database", `${(s.etcd.db_size / 1024).toFixed(0)} KiB`, "card-db"),
        card("etcd version", s.etcd.version, "card-version"), card("nodes", s.nodes, "card-nodes"), card("leader", s.leader, "card-leader"),
        card("jobs", s.jobs, "card-jobs", `${s.paused} paused`), card("running runs", running, "card-running"),
        card("recent firings", Object.values(s.claims_by_state || {}).reduce((a, b) => a + b, 0), "card-firings")]);
      const degraded = new Set((s.degraded && s.degraded.levels) || []);
      show("kill-state", degraded.size && s.degraded.kill ? "The running runs of the degraded levels are being killed." : "");
      replaceRows(document.querySelector("#levels-table tbody"), [1, 2, 3].map((lvl) => {
        let btn = null;
        if (canOperate) {
          btn = el("button", { cls: "small", id: `${degraded.has(lvl) ? "restore" : "degrade"}-${lvl}`, text: degraded.has(lvl) ? `Restore ${lvl}+` : `Degrade ${lvl}+` });
          btn.addEventListener("click", () => act(degraded.has(lvl) ? "restore" : "degrade", lvl));
        }
        return el("tr", { "data-level": lvl }, el("td", { text: ["", "1 critical", "2 transactional", "3 best effort"][lvl] }),
          el("td", {}, el("span", { cls: degraded.has(lvl) ? "pill paused" : "pill active", text: degraded.has(lvl) ? "degraded" : "serving" })),
          el("td", {}, btn));
      }));
      const states = Object.entries(s.claims_by_state || {}).sort();
      replaceRows(document.querySelector("#states-table tbody"), states.length ? states.map(([k, v]) => el("tr", {}, el("td", {}, stateBadge(k)), el("td", { text: v })))
        : [el("tr", {}, el("td", { text: "none" }))]);
      show("cluster-error", "");
    } catch (e) { show("cluster-error", e.message); }
  };
  poll(load);
}

const pages = { jobs: () => (document.getElementById("job") ? jobPage() : jobsPage()), runs: runsPage, nodes: nodesPage, cluster: clusterPage };
document.addEventListener("DOMContentLoaded", () => { const p = pages[document.body.dataset.page]; if (p) p(); });
