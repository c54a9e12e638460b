// FuryMesh web UI: a client of the node's control API (/api/*) and /metrics, polling once
// a second. Plain DOM code, no build step, nothing fetched from outside this node. Every
// value from the node goes into the page as text (textContent), never as HTML.
"use strict";

const POLL_MS = 1000;
const HISTORY = 90; // points per shard in the throughput chart
const COLORS = ["#0b6bcb", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#1098ad", "#e67700", "#5c940d"];

// The bearer token: from the page's fragment (#token=…, never sent to the server), kept for
// this tab only.
const token = (() => {
  const m = location.hash.match(/token=([0-9A-Za-z]+)/);
  if (m) {
    sessionStorage.setItem("furymesh-token", m[1]);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("furymesh-token");
})();

const $ = (sel) => document.querySelector(sel);
const state = { node: null, shardSeries: new Map(), lastShardTotals: null, lastMetricsAt: 0 };

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      const body = await res.json();
      detail = body.detail || body.error || detail;
    } catch (_) { /* not JSON */ }
    const err = new Error(`${options.method || "GET"} ${path}: ${res.status} ${detail}`);
    err.status = res.status;
    throw err;
  }
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n >= 100 ? 0 : n >= 10 ? 1 : 2)) + " " + units[i];
}

// "1 file", "2 files".
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function duration(s) {
  if (s == null || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

// The address other nodes use: NODE_ID@HOST:PORT, with an unspecified listen host
// (0.0.0.0, [::]) replaced by the host this page was loaded from.
function peerAddress(node) {
  const listen = (node.listen_addresses || [])[0];
  if (!listen) return null;
  const i = listen.lastIndexOf(":");
  let host = listen.slice(0, i);
  const port = listen.slice(i + 1);
  if (host === "0.0.0.0" || host === "[::]") host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${node.node_id}@${host}:${port}`;
}

function renderNode(n) {
  const dl = $("#node-summary");
  dl.replaceChildren();
  const rows = [
    ["Node ID", el("span", { class: "id" }, n.node_id)],
    ["Version", n.version],
    ["Up", duration(n.uptime_seconds)],
    ["Shards", n.shards],
    ["Listening on", (n.listen_addresses || []).join(", ") || "–"],
    ["Encryption", n.encryption + (n.private_network ? " (private network)" : "")],
    ["DHT routing table", n.dht_table_size == null ? "no DHT" : `${n.dht_table_size} contacts`],
    ["Published", `${count(n.files_published, "file")}, ${count(n.collections_published, "collection")}`
      + (n.files_changed ? ` (${count(n.files_changed, "file")} changed on disk since publish)` : "")],
    ["Downloads running", n.downloads_active],
  ];
  for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, v));
}

function copyButton(text) {
  return el("button", {
    title: "copy",
    onclick: async (ev) => {
      try {
        await navigator.clipboard.writeText(text);
        ev.target.textContent = "copied";
      } catch (_) {
        ev.target.textContent = "select and copy";
      }
      setTimeout(() => { ev.target.textContent = "copy"; }, 1500);
    },
  }, "copy");
}

// Files first, then collections (releases): each with the ID `get` takes (`c-…` for a
// collection) and, when the file on disk is no longer what was published, why it is not
// served and what to do.
function renderFiles(files) {
  const colls = files.filter((f) => f.kind === "collection").length;
  $("#files-count").textContent = `(${count(files.length - colls, "file")}, ${count(colls, "collection")})`;
  const body = $("#files tbody");
  body.replaceChildren();
  const peer = state.node ? peerAddress(state.node) : null;
  for (const f of files) {
    const id = f.id || f.file_id;
    const isColl = f.kind === "collection";
    const get = peer ? `furymesh get ${id} --peer ${peer} -o ${f.name}` : "";
    const name = el("td", {}, isColl ? `${f.name}/` : f.name,
      isColl ? el("div", { class: "hint" }, `collection of ${count(f.files || 0, "file")}`) : "");
    if (f.state && f.state !== "ok") {
      name.append(el("div", { class: "warn" }, f.state_detail || f.state));
    }
    body.append(el("tr", { class: f.state && f.state !== "ok" ? "changed" : "", dataset: { fileId: id, kind: f.kind || "file", state: f.state || "ok" } },
      name,
      el("td", { class: "num" }, bytes(f.size)),
      el("td", { class: "num" }, isColl ? "–" : f.chunks),
      el("td", {}, el("span", { class: "id" }, id), " ", copyButton(id)),
      el("td", {}, peer ? el("span", { class: "id peer" }, peer) : "–", " ", peer ? copyButton(get) : ""),
    ));
  }
}

async function act(method, path) {
  try {
    await api(path, { method });
    await refresh();
  } catch (e) {
    banner(e.message);
  }
}

function renderDownloads(list) {
  $("#downloads-count").textContent = `(${list.length})`;
  $("#token-hint").hidden = !!token || list.length === 0;
  const body = $("#downloads tbody");
  body.replaceChildren();
  for (const d of list) {
    const frac = d.total_bytes ? d.done_bytes / d.total_bytes : 0;
    const pct = (frac * 100).toFixed(1) + "%";
    const bar = el("div", { class: "bar" + (d.state === "completed" ? " done" : d.state === "failed" ? " failed" : "") });
    const fill = el("div");
    fill.style.width = pct;
    bar.append(fill);
    const live = ["starting", "running", "pausing"].includes(d.state);
    const buttons = el("td", {},
      el("button", { onclick: () => act("POST", `/api/downloads/${d.id}/pause`), ...(live && token ? {} : { disabled: "" }) }, "pause"),
      el("button", { onclick: () => act("POST", `/api/downloads/${d.id}/resume`), ...(d.state === "paused" && token ? {} : { disabled: "" }) }, "resume"),
      el("button", { onclick: () => act("DELETE", `/api/downloads/${d.id}`), ...((live || d.state === "paused") && token ? {} : { disabled: "" }) }, "cancel"),
    );
    body.append(el("tr", { dataset: { downloadId: d.id, doneBytes: d.done_bytes, totalBytes: d.total_bytes } },
      el("td", { class: "num" }, d.id),
      el("td", {}, el("span", { class: "id" }, d.file_id.slice(0, 16) + "…"), el("br"), el("code", {}, d.output)),
      el("td", { class: "state-" + d.state }, d.state, d.error ? el("div", { class: "hint" }, d.error) : ""),
      el("td", { class: "num" }, bar, el("span", { class: "pct" }, pct), el("div", { class: "hint" }, `${bytes(d.done_bytes)} of ${bytes(d.total_bytes)}, ${d.chunks_done}/${d.chunks_total} chunks`)),
      el("td", { class: "num" }, bytes(d.rate_bytes_per_s) + "/s"),
      el("td", { class: "num" }, duration(d.eta_seconds)),
      el("td", { class: "num" }, (d.peer_rows || []).length),
      buttons,
    ));
  }
}

function renderPeers(rows) {
  const head = $("#peers thead"), body = $("#peers tbody");
  head.replaceChildren();
  body.replaceChildren();
  $("#peers-empty").hidden = rows.length > 0;
  if (!rows.length) return;
  const keys = Object.keys(rows[0]).filter((k) => typeof rows[0][k] !== "object" || rows[0][k] === null);
  head.append(el("tr", {}, ...keys.map((k) => el("th", {}, k.replace(/_/g, " ")))));
  for (const r of rows) {
    body.append(el("tr", {}, ...keys.map((k) => {
      const v = r[k];
      const text = typeof v === "number" && /bytes/.test(k) ? bytes(v) + (/per_s/.test(k) ? "/s" : "") : v == null ? "–" : String(v);
      return el("td", { class: typeof v === "number" ? "num" : "" }, text);
    })));
  }
}

// Per-shard served bytes from the Prometheus text: furymesh_shard_served_payload_bytes_total{shard="N"} V
function shardTotals(text) {
  const totals = new Map();
  const re = /^furymesh_shard_served_payload_bytes_total\{shard="(\d+)"\}\s+([0-9.eE+]+)$/gm;
  let m;
  while ((m = re.exec(text))) totals.set(m[1], Number(m[2]));
  return totals;
}

function updateChart(text) {
  const now = performance.now();
  const totals = shardTotals(text);
  if (state.lastShardTotals) {
    const dt = (now - state.lastMetricsAt) / 1000;
    for (const [shard, v] of totals) {
      const prev = state.lastShardTotals.get(shard) ?? v;
      const series = state.shardSeries.get(shard) || [];
      series.push(Math.max(0, (v - prev) / dt));
      while (series.length > HISTORY) series.shift();
      state.shardSeries.set(shard, series);
    }
  }
  state.lastShardTotals = totals;
  state.lastMetricsAt = now;
  drawChart();
}

function drawChart() {
  const c = $("#chart");
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height, pad = 48;
  ctx.clearRect(0, 0, w, h);
  let max = 1024; // at least 1 KiB/s on the axis, so an idle node shows a flat line at 0
  for (const s of state.shardSeries.values()) for (const v of s) max = Math.max(max, v);
  ctx.strokeStyle = "#dde2e7";
  ctx.fillStyle = "#66707a";
  ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = h - 16 - ((h - 28) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(bytes((max * i) / 4) + "/s", 2, y + 4);
  }
  const legend = $("#legend");
  legend.replaceChildren();
  [...state.shardSeries.keys()].sort((a, b) => a - b).forEach((shard, i) => {
    const s = state.shardSeries.get(shard);
    const color = COLORS[i % COLORS.length];
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.forEach((v, j) => {
      const x = pad + ((w - pad - 4) * (j + HISTORY - s.length)) / (HISTORY - 1);
      const y = h - 16 - ((h - 28) * v) / max;
      j ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
    });
    ctx.stroke();
    const swatch = el("i");
    swatch.style.background = color;
    legend.append(el("span", {}, swatch, `shard ${shard}: ${bytes(s[s.length - 1] || 0)}/s`));
  });
  ctx.lineWidth = 1;
}

async function refresh() {
  try {
    const [node, files, downloads] = await Promise.all([
      api("/api/node"), api("/api/files"), api("/api/downloads"),
    ]);
    state.node = node;
    renderNode(node);
    renderFiles(files);
    renderDownloads(Array.isArray(downloads) ? downloads : downloads.downloads || []);
    // Optional parts: a node without them still shows the rest.
    api("/metrics").then(updateChart).catch(() => {});
    api("/api/peers")
      .then((p) => renderPeers(Array.isArray(p) ? p : p.peers || []))
      .catch(() => renderPeers([]));
    $("#status").textContent = `node ${node.node_id.slice(0, 12)}… · up ${duration(node.uptime_seconds)}`;
    $("#status").className = "status ok";
    banner(null);
  } catch (e) {
    $("#status").textContent = "not reachable";
    $("#status").className = "status down";
    banner(e.status === 401 ? "The API wants its token: open this page as /#token=TOKEN (DATA_DIR/api.token)." : e.message);
  }
}

refresh();
setInterval(refresh, POLL_MS);
