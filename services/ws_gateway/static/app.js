// The demo page: one WebSocket to ws_gateway, calls correlated by id, pushes in a feed.
// Text only ever goes in through textContent: message data is never parsed as HTML.
//
// Authentication: the gateway's hello says a token is required. In demo mode the page asks
// /demo/token for one (a real app's backend would issue it, docs/gateway-auth.md), sends it
// as the first frame, and sends a fresh one before it expires. The token is never put in
// the URL.

import { drawHistogram, drawLatency, drawRate, showServices } from "./live.js";

const MAX_CALL_ROWS = 100;
const MAX_EVENTS = 50;
const $ = (id) => document.getElementById(id);
const CLOSE_REASONS = {
  1013: "too many connections, retrying",
  4001: "not authenticated",
  4002: "token expired",
  4008: "rate limit exceeded",
  4009: "frame too large",
  1009: "frame too large",
};

// With the current token, /demo/token renews it for the same sub (a refresh keeps the sub).
async function fetchDemoToken(current) {
  const headers = current ? { Authorization: `Bearer ${current}` } : {};
  const response = await fetch("/demo/token", { cache: "no-store", headers });
  if (!response.ok) throw new Error(`/demo/token answered ${response.status}`);
  return response.json(); // {token, sub, expiresAt, ttl}
}

class Gateway {
  constructor(url, { onState, onEvent, onHello, onReady, onNotice, onStats, onPresence }) {
    this.url = url;
    this.onStats = onStats;
    this.onPresence = onPresence;
    this.onState = onState;
    this.onEvent = onEvent;
    this.onHello = onHello;
    this.onReady = onReady;
    this.onNotice = onNotice;
    this.pending = new Map(); // id -> {resolve, timer}
    this.nextId = 1;
    this.attempt = 0;
    this.maxCalls = 64;
    this.ready = false;
    this.refreshTimer = null;
    this.refreshes = 0;
    this.connect();
  }

  connect() {
    this.onState(this.attempt === 0 ? "connecting" : "reconnecting", "");
    const ws = new WebSocket(this.url, ["pubsub-rpc.v1"]);
    this.ws = ws;
    this.ready = false;
    ws.onopen = () => { this.onState("authenticating", ""); };
    ws.onmessage = (msg) => this.receive(msg.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      clearTimeout(this.refreshTimer);
      this.ready = false;
      this.failPending("connection_lost", "the WebSocket closed before the reply");
      const reason = CLOSE_REASONS[event.code];
      if (reason) this.onNotice(`connection closed (${event.code}): ${reason}`);
      this.attempt += 1;
      // Exponential backoff with jitter, capped: a restarted gateway is not stampeded.
      const delay = Math.min(8000, 250 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
      this.onState("reconnecting", `retry in ${(delay / 1000).toFixed(1)} s`);
      setTimeout(() => this.connect(), delay);
    };
  }

  // Sends a token as the first frame, then a fresh one for the same sub well before each
  // expiry, on the open socket.
  async authenticate(ws, current) {
    try {
      const { token, expiresAt } = await fetchDemoToken(current);
      if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send(JSON.stringify({ type: "auth", token }));
      if (current) this.refreshes += 1;
      const lifetime = expiresAt * 1000 - Date.now();
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => this.authenticate(ws, token), Math.max(1000, lifetime * 0.7));
    } catch (err) {
      this.onNotice(`cannot get a demo token: ${err.message}`);
    }
  }

  receive(text) {
    let frame;
    try { frame = JSON.parse(text); } catch { return; }
    if (frame.type === "hello") {
      this.maxCalls = frame.maxCalls;
      this.onHello(frame);
      if (frame.demo) this.authenticate(this.ws);
      else this.onNotice("this gateway requires a token from your application (see docs/gateway-auth.md)");
      return;
    }
    if (frame.type === "ready") {
      this.ready = true;
      this.attempt = 0;
      this.onState("open", "");
      this.onReady(frame);
      // The live view: stats once a second and the services alive (again after a reconnect).
      this.ws.send(JSON.stringify({ type: "watch", stats: true, presence: true }));
      return;
    }
    if (frame.type === "stats") { this.onStats(frame); return; }
    if (frame.type === "presence") { this.onPresence(frame); return; }
    if (frame.type === "event") { this.onEvent(frame); return; }
    if (frame.type === "error" && (frame.code === "forbidden" || frame.code === "rate_limited" || frame.code === "unauthenticated")) {
      this.onNotice(`${frame.code}: ${frame.message}`);
    }
    const entry = this.pending.get(frame.id);
    if (!entry) return;
    this.pending.delete(frame.id);
    clearTimeout(entry.timer);
    entry.resolve(frame);
  }

  failPending(code, message) {
    for (const [id, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.resolve({ type: "error", id, code, message });
    }
    this.pending.clear();
  }

  get open() { return this.ready && this.ws && this.ws.readyState === WebSocket.OPEN; }

  // Resolves with the result or error frame; never rejects. `ms` is measured here.
  call(action, data, timeoutSeconds) {
    const id = this.nextId++;
    const started = performance.now();
    return new Promise((resolve) => {
      const done = (frame) => resolve({ ...frame, id, clientMs: performance.now() - started });
      if (!this.open) { done({ type: "error", code: "not_connected", message: "the WebSocket is not open and authenticated" }); return; }
      // The gateway enforces the timeout; this guard only covers a lost gateway.
      const timer = setTimeout(() => {
        this.pending.delete(id);
        done({ type: "error", code: "timeout", message: "no answer from the gateway" });
      }, (timeoutSeconds ?? 5) * 1000 + 2000);
      this.pending.set(id, { resolve: done, timer });
      this.ws.send(JSON.stringify({ type: "call", id, action, data, timeout: timeoutSeconds }));
    });
  }
}

// -- rendering ------------------------------------------------------------------------

function setState(state, detail) {
  const el = $("conn-state");
  el.dataset.state = state;
  el.textContent = detail ? `${state} (${detail})` : state;
}

function showNotice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = !text;
}

function showDemoBanner(demo) {
  $("demo-banner").hidden = !demo;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function short(value, limit = 160) {
  const text = JSON.stringify(value) ?? "null";
  return text.length > limit ? text.slice(0, limit - 1) + "…" : text;
}

function addCallRow(id, action) {
  const body = $("calls").tBodies[0];
  const row = document.createElement("tr");
  row.dataset.callId = String(id);
  cell(row, String(id));
  cell(row, action);
  const status = cell(row, "pending", "status status-pending");
  const result = cell(row, "", "result");
  const ms = cell(row, "");
  body.prepend(row);
  while (body.rows.length > MAX_CALL_ROWS) body.deleteRow(-1);
  return (frame) => {
    const isTimeout = frame.type === "error" && frame.code === "timeout";
    status.className = `status status-${frame.type === "result" ? "ok" : isTimeout ? "timeout" : "error"}`;
    status.textContent = frame.type === "result" ? "ok" : isTimeout ? "timeout" : `error: ${frame.code}`;
    result.textContent = frame.type === "result" ? short(frame.result) : frame.message;
    ms.textContent = frame.clientMs.toFixed(2);
  };
}

function addEvent(frame) {
  const list = $("events");
  const item = document.createElement("li");
  const time = new Date().toLocaleTimeString();
  const scope = frame.private ? " (to you only)" : "";
  item.textContent = `${time}  ${frame.action} from ${frame.source}${scope}: ${short(frame.data, 240)}`;
  item.dataset.action = frame.action ?? "";
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function showActions(actions) {
  const list = $("actions");
  const names = $("action-names");
  list.replaceChildren();
  names.replaceChildren();
  for (const { name, description } of actions) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name;
    button.addEventListener("click", () => { $("action").value = name; $("data").focus(); });
    const text = document.createElement("span");
    text.textContent = description;
    item.append(button, text);
    list.append(item);
    const option = document.createElement("option");
    option.value = name;
    names.append(option);
  }
}

// -- behaviour ------------------------------------------------------------------------

function parseData() {
  const field = $("data");
  const raw = field.value.trim();
  try {
    const value = raw === "" ? null : JSON.parse(raw);
    field.removeAttribute("aria-invalid");
    $("data-error").textContent = "";
    return { ok: true, value };
  } catch (err) {
    field.setAttribute("aria-invalid", "true");
    $("data-error").textContent = `Not valid JSON: ${err.message}`;
    return { ok: false };
  }
}

async function sendCall(gateway) {
  const action = $("action").value.trim();
  if (!action) { $("action").setAttribute("aria-invalid", "true"); return; }
  $("action").removeAttribute("aria-invalid");
  const data = parseData();
  if (!data.ok) return;
  const timeout = Number($("timeout").value) || 5;
  const row = addCallRow(gateway.nextId, action);
  row(await gateway.call(action, data.value, timeout));
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function runBurst(gateway) {
  const total = Math.max(1, Math.min(100000, Number($("burst-count").value) || 1000));
  const action = $("burst-action").value.trim() || "echo";
  const window = Math.max(1, gateway.maxCalls);
  const out = $("burst-result");
  const button = $("burst");
  button.disabled = true;
  out.textContent = `running ${total} × ${action}…`;
  const latencies = [];
  let errors = 0;
  let sent = 0;
  const started = performance.now();
  async function worker() {
    while (sent < total) {
      sent += 1;
      const frame = await gateway.call(action, { n: sent }, 10);
      if (frame.type === "result") latencies.push(frame.clientMs); else errors += 1;
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, total) }, worker));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  lastBurst = latencies;
  const result = {
    count: latencies.length + errors, errors,
    p50: percentile(latencies, 50), p99: percentile(latencies, 99),
    perSecond: (latencies.length + errors) / seconds,
  };
  out.dataset.result = JSON.stringify(result);
  $("histogram-summary").textContent = drawHistogram($("chart-histogram"), latencies);
  out.textContent = `${result.count} calls, ${errors} errors, p50 ${result.p50.toFixed(2)} ms, ` +
    `p99 ${result.p99.toFixed(2)} ms, ${Math.round(result.perSecond)} calls/s (window ${window})`;
  button.disabled = false;
}

// The last stats frame, redrawn on resize so the charts stay sharp at any width.
let lastStats = null;
let lastBurst = [];

function showStats(stats) {
  lastStats = stats;
  $("rate-summary").textContent = drawRate($("chart-rate"), stats);
  $("latency-summary").textContent = drawLatency($("chart-latency"), stats);
}

function main() {
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const gateway = new Gateway(url, {
    onState: setState,
    onEvent: addEvent,
    onNotice: showNotice,
    onHello: (hello) => showDemoBanner(hello.demo),
    onStats: showStats,
    onPresence: (frame) => showServices($("services"), frame.services),
    onReady: async (ready) => {
      $("whoami").textContent = `signed in as ${ready.sub}`;
      $("whoami").dataset.refreshes = String(gateway.refreshes);
      const described = ready.actions.map((name) => ({ name, description: ready.descriptions?.[name] ?? "" }));
      showActions(described);
      // The gateway fills in descriptions once it has asked the responder; if it has not
      // yet, ask ourselves (when allowed) and keep only what this socket may call.
      if (described.some((a) => !a.description) && ready.actions.includes("actions")) {
        const frame = await gateway.call("actions", null, 5);
        if (frame.type === "result" && Array.isArray(frame.result)) {
          showActions(frame.result.filter((a) => ready.actions.includes(a.name)));
        }
      }
    },
  });
  window.gateway = gateway; // for the console and for the browser tests
  $("data").addEventListener("input", parseData);
  $("call-form").addEventListener("submit", (e) => { e.preventDefault(); sendCall(gateway); });
  $("burst-form").addEventListener("submit", (e) => { e.preventDefault(); runBurst(gateway); });
  showStats(null);
  drawHistogram($("chart-histogram"), lastBurst);
  new ResizeObserver(() => {
    drawRate($("chart-rate"), lastStats);
    drawLatency($("chart-latency"), lastStats);
    drawHistogram($("chart-histogram"), lastBurst);
  }).observe($("live"));
}

main();
