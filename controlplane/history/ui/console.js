// Meridian console: plain JS over the admin API (no build step). Reads /debug/*, writes through
// POST /history/rollback and /history/resume with the admin token typed in the header.
"use strict";

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const age = (s) => (s >= 86400 ? `${Math.round(s / 86400)}d` : s >= 3600 ? `${Math.round(s / 3600)}h` : s >= 60 ? `${Math.round(s / 60)}m` : `${Math.round(s)}s`);

async function getJSON(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

async function post(path, body) {
  const token = $("#token").value.trim();
  sessionStorage.setItem("meridian-token", token);
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify(body || {}),
  });
  return { status: resp.status, body: await resp.json() };
}

function banner(pin) {
  const el = $("#banner");
  el.hidden = !pin;
  el.textContent = pin ? `PINNED: ${pin.banner} — newer versions are pending, not served` : "";
}

// -- pages -------------------------------------------------------------------------------------
async function clusters() {
  const rows = await getJSON("/debug/clusters");
  $("#clusters-table tbody").innerHTML = rows.map((c) => `<tr data-cluster="${esc(c.cluster)}">
    <td>${esc(c.cluster)}</td><td>${c.primary ? "yes" : ""}</td>
    <td class="${c.state === "synced" ? "ok" : "bad"}">${esc(c.state)}</td>
    <td>${c.seconds_since_sync == null ? "-" : age(c.seconds_since_sync) + " ago"}</td>
    <td>${esc(Object.entries(c.objects || {}).map(([k, v]) => `${k} ${v}`).join(", "))}</td>
    <td class="bad">${esc(Object.values(c.errors || {}).join("; ") || c.reason || "")}</td></tr>`).join("");
}

async function envoys() {
  const streams = await getJSON("/debug/syncz");
  const groups = {};
  for (const s of streams) (groups[s.node_cluster || "*"] ||= []).push(s);
  const types = ["CDS", "EDS", "LDS", "SRDS", "RDS", "SDS"];
  $("#envoys").innerHTML = Object.keys(groups).length === 0 ? '<p class="muted">no Envoy connected</p>' :
    Object.entries(groups).map(([group, list]) => `<div class="group" data-group="${esc(group)}"><h3>group ${esc(group)} (${list.length})</h3>
    <table><thead><tr><th>node</th><th>protocol</th>${types.map((t) => `<th>${t}</th>`).join("")}</tr></thead><tbody>
    ${list.map((s) => `<tr data-node="${esc(s.node_id)}"><td>${esc(s.node_id)}</td><td>${esc(s.protocol)}</td>${types.map((t) => {
      const st = s.types[t];
      if (!st) return '<td class="muted">-</td>';
      if (st.last_nack && !st.acked_version) return `<td class="bad" title="${esc(st.last_nack.error)}">NACK</td>`;
      const state = st.pending ? "sent" : st.last_nack ? "ACK (NACKed earlier)" : "ACK";
      return `<td class="${st.pending ? "warn" : "ok"}" title="${esc(st.last_nack ? st.last_nack.error : "")}">${state} ${esc(st.acked_version || "")}</td>`;
    }).join("")}</tr>`).join("")}</tbody></table></div>`).join("");
}

let ingressRows = [];
async function ingresses() {
  ingressRows = await getJSON("/debug/ingresses");
  renderIngresses();
}

function renderIngresses() {
  const q = $("#ingress-search").value.trim().toLowerCase();
  const rows = ingressRows.filter((r) => !q || JSON.stringify(r).toLowerCase().includes(q));
  $("#ingresses-table tbody").innerHTML = rows.map((r) => {
    const levels = (r.findings || []).map((f) => f.level);
    const state = !r.accepted ? "rejected" : levels.some((l) => l === "warning" || l === "conflict") ? "warning" : levels.includes("unsupported") ? "unsupported" : "converted";
    const cls = { converted: "ok", warning: "warn", unsupported: "warn", rejected: "bad" }[state];
    return `<tr data-ingress="${esc(r.namespace)}/${esc(r.name)}"><td>${esc(r.cluster)}: ${esc(r.namespace)}/${esc(r.name)}</td>
      <td>${esc(r.hosts.join(", "))}</td><td class="${cls}">${state}</td>
      <td><ul class="findings">${[...r.reasons.map((x) => `<li class="bad">${esc(x)}</li>`),
        ...(r.findings || []).filter((f) => f.level !== "rejected").map((f) => `<li class="${f.level === "converted" ? "ok" : "warn"}">${esc(f.level)} ${esc(f.key)}: ${esc(f.message)}</li>`)].join("")}</ul></td></tr>`;
  }).join("");
}

async function history() {
  const doc = await getJSON("/debug/history?limit=100");
  banner(doc.pin);
  const pinned = doc.pin ? doc.pin.version : null;
  $("#resume").disabled = !doc.pin;
  const recs = doc.records.slice().reverse();
  $("#history-table tbody").innerHTML = recs.map((r) => {
    const state = r.version === pinned ? "pinned" : r.served ? "served" : "pending";
    const c = r.counts || {};
    const fleet = Object.values(r.fleet || {});
    const acks = fleet.length ? `${fleet.reduce((a, f) => a + (f.acked || 0), 0)}/${fleet.reduce((a, f) => a + (f.nacked || 0), 0)}` : "-";
    return `<tr class="${state}" data-version="${r.version}"><td>${r.version}</td><td>${age(doc.now - r.at)}</td><td>${state}</td>
      ${["CDS", "EDS", "LDS", "RDS", "SDS"].map((t) => `<td>${c[t] || 0}</td>`).join("")}
      <td>${r.resource_changes}</td><td>${acks}</td><td>${esc(r.summary)}</td>
      <td><button class="rollback" data-version="${r.version}">Roll back to ${r.version}</button>
          <button class="diffprev" data-version="${r.version}">diff</button></td></tr>`;
  }).join("");
  if (!$("#diff-from").value && recs.length > 1) {
    $("#diff-from").value = recs[1].version;
    $("#diff-to").value = recs[0].version;
  }
}

// -- side-by-side diff from a unified diff ---------------------------------------------------------
function sideBySide(text) {
  const out = [];
  let dels = [], adds = [];
  const flush = () => {
    for (let i = 0; i < Math.max(dels.length, adds.length); i++) {
      out.push(`<div class="l ${i < dels.length ? "del" : ""}">${esc(dels[i] ?? "")}</div><div class="r ${i < adds.length ? "add" : ""}">${esc(adds[i] ?? "")}</div>`);
    }
    dels = []; adds = [];
  };
  for (const line of text.split("\n")) {
    if (line.startsWith("--- ")) { flush(); out.push(`<div class="hdr">${esc(line.slice(4))} &rarr; `); continue; }
    if (line.startsWith("+++ ")) { out[out.length - 1] += `${esc(line.slice(4))}</div>`; continue; }
    if (line.startsWith("@@")) { flush(); out.push(`<div class="l muted">${esc(line)}</div><div class="r muted">${esc(line)}</div>`); continue; }
    if (line.startsWith("-")) dels.push(line.slice(1));
    else if (line.startsWith("+")) adds.push(line.slice(1));
    else { flush(); if (line) out.push(`<div class="l">${esc(line.slice(1))}</div><div class="r">${esc(line.slice(1))}</div>`); }
  }
  flush();
  return `<div class="sbs">${out.join("")}</div>`;
}

async function showDiff() {
  const from = $("#diff-from").value.trim(), to = $("#diff-to").value.trim() || "live";
  const sources = $("#diff-sources").checked;
  try {
    const doc = await getJSON(`/debug/history/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}${sources ? "&sources=1" : ""}`);
    $("#diff-summary").textContent = sources ? `${doc.from} → ${doc.to}` : `${doc.from} → ${doc.to}: ${doc.summary_lines.join("; ")}`;
    $("#diff").innerHTML = sources ? `<pre>${esc(doc.text)}</pre>` : sideBySide(doc.text);
  } catch (e) {
    $("#diff-summary").textContent = `error: ${e.message}`;
  }
}

async function rollback(version, yes) {
  const res = await post("/history/rollback", { version, reason: $("#reason").value, yes: !!yes });
  const el = $("#action-result");
  if (res.status === 200) {
    el.className = "result ok";
    el.textContent = `pinned to version ${res.body.pin.version}`;
  } else if (res.status === 409 && res.body.reasons && res.body.reasons.length && !yes) {
    el.className = "result warn";
    el.innerHTML = `${esc(res.body.error)}: ${res.body.reasons.map(esc).join("; ")} <button id="confirm-rollback">Roll back anyway</button>`;
    $("#confirm-rollback").onclick = () => rollback(version, true);
  } else {
    el.className = "result bad";
    el.textContent = `${res.status}: ${res.body.error || ""} ${(res.body.reasons || []).join("; ")}`;
  }
  await history();
}

async function resume() {
  const el = $("#action-result");
  const diff = await getJSON("/debug/history/diff?from=served&to=live");
  const res = await post("/history/resume");
  el.className = res.status === 200 ? "result ok" : "result bad";
  el.textContent = res.status === 200 ? `resumed (${diff.summary_lines.join("; ")})` : `${res.status}: ${res.body.error}`;
  await history();
}

// -- routing -----------------------------------------------------------------------------------
const pages = { clusters, envoys, ingresses, history };

async function show() {
  const page = (location.hash || "#clusters").slice(1);
  for (const el of document.querySelectorAll(".page")) el.hidden = el.id !== `page-${page}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  try {
    if (page !== "history") banner((await getJSON("/debug/history?limit=1")).pin);
    await (pages[page] || clusters)();
    document.body.dataset.loaded = page;
  } catch (e) {
    document.body.dataset.loaded = `error: ${e.message}`;
  }
}

document.addEventListener("click", (ev) => {
  const t = ev.target;
  if (t.classList.contains("rollback")) rollback(Number(t.dataset.version));
  if (t.classList.contains("diffprev")) {
    $("#diff-from").value = Number(t.dataset.version) - 1;
    $("#diff-to").value = t.dataset.version;
    showDiff();
  }
});
$("#ingress-search").addEventListener("input", renderIngresses);
$("#diff-go").addEventListener("click", showDiff);
$("#resume").addEventListener("click", resume);
$("#token").value = sessionStorage.getItem("meridian-token") || "";
window.addEventListener("hashchange", show);
show();
