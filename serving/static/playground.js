// xalign playground: plain JS against the server's own API (paths are relative, so a route prefix works).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { sessionId: null, target: null, chat: [] };

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function status(text) { $("status").textContent = text; }

async function call(path, body) {
  const resp = await fetch(path, { method: body ? "POST" : "GET", headers: headers(),
                                   body: body ? JSON.stringify(body) : undefined });
  const rid = resp.headers.get("x-request-id") || "";
  let payload = null;
  try { payload = await resp.json(); } catch (e) { payload = null; }
  status(`${body ? "POST" : "GET"} ${path} → ${resp.status}` + (rid ? `  (request ${rid})` : ""));
  if (!resp.ok) {
    const err = (payload && payload.error) || {};
    throw new Error(`${resp.status}: ${err.message || resp.statusText}` + (payload && payload.request_id ? ` [request ${payload.request_id}]` : ""));
  }
  return payload;
}

function langLabel(info) {
  if (!info) return "undetermined";
  const conf = info.confidence != null ? ` ${(info.confidence * 100).toFixed(0)}%` : "";
  return `${info.name} (${info.code})${info.detected ? conf : ""}`;
}

function render(item) {
  $("translation").textContent = item.translation;
  $("source-lang").textContent = item.source_lang ? langLabel(item.source_lang) + (item.source_lang.detected ? " detected" : "") : "–";
  $("output-lang").textContent = langLabel(item.output_lang);
  const off = $("off-target");
  off.className = "badge " + (item.off_target === true ? "bad" : item.off_target === false ? "ok" : "");
  off.textContent = item.off_target === true ? "off-target" : item.off_target === false ? "on target" : "language undetermined";
  const g = item.guard;
  $("guard-action").textContent = g.action + (g.action === "retried" ? (g.recovered ? " → recovered" : " → still off-target") : "");
  $("guard-detail").textContent = g.action === "retried"
    ? `first answer (${g.first_output_lang || "?"}), rejected: ${g.first_output}` : "";
}

function addTurn(label, text) {
  const li = document.createElement("li");
  li.textContent = `${label}: ${text}`;
  $("turns").appendChild(li);
}

async function runTranslate(body, turnLabel) {
  const result = $("result");
  result.dataset.state = "busy";
  showError("");
  for (const b of document.querySelectorAll("button")) b.disabled = true;
  try {
    body.model = $("model").value || undefined;
    body.guard = $("guard").checked;
    const answer = await call("v1/translate", body);
    const item = answer.items[0];
    render(item);
    state.sessionId = answer.session_id || null;
    state.target = item.target_lang.code;
    $("refine-box").hidden = !state.sessionId;
    addTurn(turnLabel, item.translation);
    result.dataset.state = "done";
  } catch (e) {
    showError(e.message);
    result.dataset.state = "error";
  } finally {
    for (const b of document.querySelectorAll("button")) b.disabled = false;
  }
}

function translate() {
  const text = $("text").value;
  $("turns").innerHTML = "";
  const body = { text, target_lang: $("tgt").value, session: true };
  if ($("src").value) body.source_lang = $("src").value;
  return runTranslate(body, `→ ${$("tgt").value}`);
}

function refine(extra, label) {
  if (!state.sessionId) return;
  return runTranslate({ session_id: state.sessionId, ...extra }, label);
}

// ---- chat (streamed with SSE over fetch) ---------------------------------------------------------

async function chatSend() {
  const input = $("chat-input");
  const content = input.value.trim();
  if (!content) return;
  input.value = "";
  showError("");
  state.chat.push({ role: "user", content });
  const log = $("chat-log");
  const you = document.createElement("li");
  you.className = "user";
  you.textContent = content;
  log.appendChild(you);
  const li = document.createElement("li");
  li.className = "assistant";
  li.dataset.state = "streaming";
  log.appendChild(li);
  try {
    const resp = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ model: $("model").value, messages: state.chat, stream: true }),
    });
    if (!resp.ok) {
      const payload = await resp.json().catch(() => ({}));
      throw new Error(`${resp.status}: ${(payload.error || {}).message || resp.statusText}`);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).replace(/^data: /, "");
        buffer = buffer.slice(cut + 2);
        if (event === "[DONE]") continue;
        const chunk = JSON.parse(event);
        if (chunk.error) throw new Error(chunk.error.message + ` [request ${chunk.request_id}]`);
        for (const c of chunk.choices || []) text += (c.delta && c.delta.content) || "";
        li.textContent = text;
      }
    }
    state.chat.push({ role: "assistant", content: text });
    li.dataset.state = "done";
  } catch (e) {
    li.dataset.state = "error";
    showError(e.message);
  }
}

// ---- setup ----------------------------------------------------------------------------------------

function fill(select, langs, preferred) {
  for (const l of langs) {
    const o = document.createElement("option");
    o.value = l.code;
    o.textContent = `${l.name} (${l.code})`;
    select.appendChild(o);
  }
  if (preferred) select.value = preferred;
}

async function loadLists() {
  showError("");
  try {
    const models = await call("v1/models");
    const sel = $("model");
    const current = sel.value;
    sel.innerHTML = "";
    for (const m of models.data) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = m.parent ? `${m.id} (adapter)` : m.id;
      sel.appendChild(o);
    }
    if (current) sel.value = current;
    if (!$("tgt").options.length) {
      const langs = (await call("v1/languages")).data;
      fill($("src"), langs);
      fill($("tgt"), langs, "de");
      fill($("retarget"), langs, "ja");
    }
    document.body.dataset.ready = "1";
  } catch (e) {
    showError(e.message);
  }
}

async function health() {
  const badge = $("health");
  try {
    const r = await fetch("healthz");
    const body = await r.json();
    badge.textContent = r.ok ? `ready · queue ${body.queue_depth}` : `unavailable: ${body.reason}`;
    badge.className = "badge " + (r.ok ? "ok" : "bad");
  } catch (e) {
    badge.textContent = "unreachable";
    badge.className = "badge bad";
  }
}

function init() {
  const key = localStorage.getItem("xalign-api-key");
  if (key) $("api-key").value = key;
  $("api-key").addEventListener("change", () => {
    localStorage.setItem("xalign-api-key", $("api-key").value.trim());
    loadLists();
  });
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      for (const t of document.querySelectorAll(".tab")) {
        t.classList.toggle("active", t === tab);
        $(t.dataset.panel).hidden = t !== tab;
      }
    });
  }
  $("translate").addEventListener("click", translate);
  for (const b of document.querySelectorAll(".follow-up")) {
    b.addEventListener("click", () => refine({ follow_up: b.dataset.kind }, b.textContent));
  }
  $("retarget-go").addEventListener("click",
    () => refine({ follow_up: "retarget", target_lang: $("retarget").value }, `now into ${$("retarget").value}`));
  $("refine").addEventListener("click", () => {
    const text = $("refine-text").value.trim();
    if (text) refine({ instruction: text }, text);
  });
  $("chat-send").addEventListener("click", chatSend);
  $("chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter") chatSend(); });
  health();
  setInterval(health, 15000);
  loadLists();
}

init();
