// Load from Node.js (ioredis), seed protocol, pending calls in a Map: the same-run reference.
//   node bench_caller.js REDIS_URL CHANNEL INFLIGHT SECONDS
// Prints one JSON line: count, errors, rate, p50/p90/p99/max (ms), cpu (s).
"use strict";
const Redis = require("ioredis");

async function main() {
  const [url, channel, inflightText, secondsText] = process.argv.slice(2);
  const inflight = Number(inflightText);
  const sub = new Redis(url);
  const pub = new Redis(url);
  const pending = new Map();
  let seq = 0;
  const prefix = Math.random().toString(16).slice(2, 10);
  sub.on("message", (_channel, message) => {
    let reply;
    try { reply = JSON.parse(message); } catch { return; }
    const entry = reply && pending.get(reply.requestId);
    if (entry) { pending.delete(reply.requestId); clearTimeout(entry.timer); entry.resolve(reply); }
  });
  await sub.subscribe(channel);
  const payload = "x".repeat(100);
  const call = () => new Promise((resolve, reject) => {
    const requestId = `${prefix}-${seq++}`;
    const timer = setTimeout(() => { pending.delete(requestId); reject(new Error("timeout")); }, 10000);
    pending.set(requestId, { resolve, timer });
    pub.publish(`${channel}_sender`, JSON.stringify({ action: "echo", data: payload, requestId, source: "nodejs" }));
  });
  const warmUntil = Date.now() + 500;
  // Batches of INFLIGHT calls, as every other bench caller warms up (bench/peers/load.js).
  while (Date.now() < warmUntil) await Promise.all(Array.from({ length: inflight }, call));
  const latencies = [];
  let errors = 0;
  const stopAt = Date.now() + Number(secondsText) * 1000;
  process.stdout.write("measuring\n"); // the bench reads the other processes' CPU here
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();
  async function worker() {
    while (Date.now() < stopAt) {
      const t0 = process.hrtime.bigint();
      try { await call(); latencies.push(Number(process.hrtime.bigint() - t0) / 1e6); } catch { errors += 1; }
    }
  }
  await Promise.all(Array.from({ length: inflight }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  process.stdout.write("measured\n");
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.round((p / 100) * latencies.length) - 1))];
  process.stdout.write(JSON.stringify({
    count: latencies.length, errors, seconds, rate: latencies.length / seconds,
    p50: pct(50), p90: pct(90), p99: pct(99), max: latencies[latencies.length - 1],
    cpu: (cpu.user + cpu.system) / 1e6,
  }) + "\n");
  sub.disconnect();
  pub.disconnect();
}

main();
