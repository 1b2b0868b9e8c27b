// The live view: small charts drawn by hand on canvases (no library, no CDN) and the
// services panel. Data comes from the gateway's `stats` frames (once a second, the last
// minute of this gateway's calls) and `presence` frames (the services alive), and from
// the page's own burst for the histogram. Each chart keeps what it shows in data-*
// attributes (tests and curious people read them) and in its aria-label, as text.

const COLORS = { bar: "#1d4ed8", error: "#a11a1a", p50: "#1d4ed8", p99: "#b45309", grid: "#d5dae1", text: "#4a5563" };
const FONT = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";

// A canvas sized to its CSS box at the screen's pixel ratio; returns the context and size.
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth));
  const height = Math.max(1, Math.round(canvas.clientHeight));
  if (canvas.width !== width * ratio || canvas.height !== height * ratio) {
    canvas.width = width * ratio;
    canvas.height = height * ratio;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = FONT;
  return { ctx, width, height };
}

// A round upper bound for an axis, at least `value` and at most 25 % above it.
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function formatMs(ms) {
  if (ms == null || Number.isNaN(ms)) return "–";
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms >= 10000 ? 0 : 1)} s`;
  return `${ms >= 10 ? Math.round(ms) : ms.toFixed(ms >= 1 ? 1 : 2)} ms`;
}

// Frame: axis labels, a baseline and a top grid line; returns the plot area.
function frame(ctx, width, height, top, left, bottom) {
  const plot = { x: 46, y: 8, w: width - 52, h: height - 26 };
  ctx.strokeStyle = COLORS.grid;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(plot.x, plot.y + 0.5);
  ctx.lineTo(plot.x + plot.w, plot.y + 0.5);
  ctx.moveTo(plot.x, plot.y + plot.h + 0.5);
  ctx.lineTo(plot.x + plot.w, plot.y + plot.h + 0.5);
  ctx.stroke();
  ctx.fillStyle = COLORS.text;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  ctx.fillText(top, plot.x - 4, plot.y);
  ctx.fillText("0", plot.x - 4, plot.y + plot.h);
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(left, plot.x, plot.y + plot.h + 4);
  ctx.textAlign = "right";
  ctx.fillText(bottom, plot.x + plot.w, plot.y + plot.h + 4);
  return plot;
}

function compact(n) {
  return n >= 10000 ? `${Math.round(n / 1000)}k` : n >= 1000 ? `${(n / 1000).toFixed(1)}k` : String(Math.round(n));
}

// Calls per second over the last minute: one bar a second, its errors in red on top.
export function drawRate(canvas, stats) {
  const { ctx, width, height } = prepare(canvas);
  const calls = stats?.calls ?? [];
  const errors = stats?.errors ?? [];
  const max = niceMax(Math.max(0, ...calls));
  const plot = frame(ctx, width, height, compact(max), "−60 s", "now");
  const slot = plot.w / Math.max(1, calls.length);
  calls.forEach((count, i) => {
    if (!count) return;
    const h = (count / max) * plot.h;
    const x = plot.x + i * slot + 0.5;
    ctx.fillStyle = COLORS.bar;
    ctx.fillRect(x, plot.y + plot.h - h, Math.max(1, slot - 1), h);
    if (errors[i]) {
      const eh = (errors[i] / max) * plot.h;
      ctx.fillStyle = COLORS.error;
      ctx.fillRect(x, plot.y + plot.h - h, Math.max(1, slot - 1), Math.max(1, eh));
    }
  });
  const now = calls.length ? calls[calls.length - 1] : 0;
  const peak = Math.max(0, ...calls);
  const total = stats?.minute?.calls ?? 0;
  const failed = stats?.minute?.errors ?? 0;
  canvas.dataset.points = JSON.stringify(calls);
  canvas.dataset.total = String(total);
  canvas.dataset.t = String(stats?.t ?? "");
  const summary = `last second ${now}/s, peak ${peak}/s, ${total} calls and ${failed} errors in the last minute`;
  canvas.setAttribute("aria-label", `Calls per second over the last minute: ${summary}`);
  return summary;
}

// p50 and p99 per second over the last minute, as two lines (gaps where no call ended).
export function drawLatency(canvas, stats) {
  const { ctx, width, height } = prepare(canvas);
  const p50 = stats?.p50 ?? [];
  const p99 = stats?.p99 ?? [];
  const max = niceMax(Math.max(0, ...p99.filter((v) => v != null), ...p50.filter((v) => v != null)));
  const plot = frame(ctx, width, height, formatMs(max), "−60 s", "now");
  const step = plot.w / Math.max(1, p50.length - 1);
  for (const [series, color] of [[p99, COLORS.p99], [p50, COLORS.p50]]) {
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    series.forEach((value, i) => {
      if (value == null) { drawing = false; return; }
      const x = plot.x + i * step;
      const y = plot.y + plot.h - (value / max) * plot.h;
      if (drawing) ctx.lineTo(x, y); else { ctx.moveTo(x, y); ctx.fillRect(x - 1.5, y - 1.5, 3, 3); }
      drawing = true;
    });
    ctx.stroke();
  }
  const minute = stats?.minute ?? {};
  canvas.dataset.p50 = String(minute.p50 ?? "");
  canvas.dataset.p99 = String(minute.p99 ?? "");
  const summary = `p50 ${formatMs(minute.p50)}, p99 ${formatMs(minute.p99)} over the last minute`;
  canvas.setAttribute("aria-label", `Latency per second, p50 (blue) and p99 (amber): ${summary}`);
  return summary;
}

// The last burst's round trips (measured by this page), in log-scale bins.
export function drawHistogram(canvas, latencies) {
  const { ctx, width, height } = prepare(canvas);
  const sorted = [...(latencies ?? [])].filter((v) => v > 0).sort((a, b) => a - b);
  const binCount = 24;
  const bins = new Array(binCount).fill(0);
  const low = sorted.length ? sorted[0] : 1;
  const high = sorted.length ? sorted[sorted.length - 1] : 10;
  const span = Math.log(Math.max(high, low * 1.01) / low);
  for (const value of sorted) {
    bins[Math.min(binCount - 1, Math.floor((Math.log(value / low) / span) * binCount))] += 1;
  }
  const max = niceMax(Math.max(0, ...bins));
  const plot = frame(ctx, width, height, compact(max), formatMs(low), formatMs(high));
  const slot = plot.w / binCount;
  ctx.fillStyle = COLORS.bar;
  bins.forEach((count, i) => {
    if (!count) return;
    const h = (count / max) * plot.h;
    ctx.fillRect(plot.x + i * slot + 0.5, plot.y + plot.h - h, Math.max(1, slot - 1), h);
  });
  canvas.dataset.count = String(sorted.length);
  canvas.dataset.bins = JSON.stringify(bins);
  const summary = sorted.length
    ? `${sorted.length} calls from ${formatMs(low)} to ${formatMs(high)}, log scale`
    : "no burst yet";
  canvas.setAttribute("aria-label", `Latency histogram of the last burst: ${summary}`);
  return summary;
}

const BADGES = { ready: "ready", "not ready": "not ready", stale: "stale" };

// The services alive: responders (with their actions), callers, gateways, each with a badge.
export function showServices(list, services) {
  list.replaceChildren();
  if (!services.length) {
    const empty = document.createElement("li");
    empty.className = "hint";
    empty.textContent = "no heartbeat heard yet";
    list.append(empty);
  }
  for (const service of services) {
    const item = document.createElement("li");
    item.dataset.service = service.service;
    item.dataset.kind = service.kind;
    item.dataset.state = service.state;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.dataset.state = service.state;
    badge.textContent = BADGES[service.state] ?? service.state;
    const name = document.createElement("strong");
    name.textContent = service.service;
    const kind = document.createElement("span");
    kind.className = "hint";
    kind.textContent = ` ${service.kind} · ${service.instance}`;
    item.append(badge, " ", name, kind);
    if (service.kind === "responder") {
      const actions = document.createElement("span");
      actions.className = "svc-actions";
      actions.textContent = service.actions.length ? service.actions.join(", ") : "no actions";
      item.append(actions);
    }
    list.append(item);
  }
  list.dataset.count = String(services.length);
}
