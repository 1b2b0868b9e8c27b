// The load loop and result line of every Node.js bench caller (the bare ioredis pair's, NestJS's,
// Moleculer's), so their rows are measured alike: INFLIGHT workers calling back to back for
// SECONDS, latency per call from hrtime, the caller's CPU from process.cpuUsage().
// Prints one JSON line: count, errors, rate, p50/p90/p99/max (ms), cpu (s).
// The warm-up is every bench caller's: 500 ms of batches of INFLIGHT calls, so the
// frameworks' concurrent paths are warm (NestJS's calls/s climbs for most of a second
// when the warm-up runs one call at a time).

export async function measure(call, inflight, seconds) {
  const warmUntil = Date.now() + 500;
  while (Date.now() < warmUntil) await Promise.all(Array.from({ length: inflight }, call));
  const latencies = [];
  let errors = 0;
  const stopAt = Date.now() + seconds * 1000;
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
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  process.stdout.write("measured\n");
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.round((p / 100) * latencies.length) - 1))];
  process.stdout.write(JSON.stringify({
    count: latencies.length, errors, seconds: elapsed, rate: latencies.length / elapsed,
    p50: pct(50), p90: pct(90), p99: pct(99), max: latencies[latencies.length - 1],
    cpu: (cpu.user + cpu.system) / 1e6,
  }) + "\n");
}

// The bench's payload: the same 100-byte string the other pairs send.
export const PAYLOAD = "x".repeat(100);

// A caller gives up on a call after 10 s; it counts as an error.
export const TIMEOUT_MS = 10000;
