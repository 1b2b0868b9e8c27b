// The Node.js peer of the `peers` compose profile: a seed-protocol caller (ioredis) that calls
// the responder every PEER_INTERVAL seconds, logs each reply as a JSON line, keeps counters in
// PEER_STATUS_FILE (read by the healthcheck and e2e) and announces each round on
// PEER_ANNOUNCE_CHANNEL as a seed-style push (requestId null), which gateways forward to
// browsers. Environment: REDIS_URL, REDIS_USERNAME, REDIS_PASSWORD_FILE (or REDIS_PASSWORD),
// RPC_CHANNEL, PEER_INTERVAL, PEER_ANNOUNCE_CHANNEL ("" = no announcements), PEER_STATUS_FILE.
"use strict";
const fs = require("fs");
const { SeedClient } = require("./seed_client");

const env = process.env;
const channel = env.RPC_CHANNEL || "laravel_database_general";
const intervalMs = 1000 * Number(env.PEER_INTERVAL || 3);
const announceChannel = env.PEER_ANNOUNCE_CHANNEL ?? channel;
const statusFile = env.PEER_STATUS_FILE || "/tmp/peer-status.json";
const status = { rounds: 0, calls: 0, ok: 0, failed: 0, lastOk: null, lastError: null, updatedAt: null };

function log(fields) { process.stdout.write(JSON.stringify({ peer: "node", ...fields }) + "\n"); }

function redisOptions() {
  const options = {};  // ioredis reconnects by itself; a command waits for at most 20 retries
  if (env.REDIS_USERNAME) options.username = env.REDIS_USERNAME;
  const password = env.REDIS_PASSWORD_FILE ? fs.readFileSync(env.REDIS_PASSWORD_FILE, "utf8").trim() : env.REDIS_PASSWORD;
  if (password) options.password = password;  // never logged
  return options;
}

async function timedCall(client, action, data, check) {
  const started = process.hrtime.bigint();
  status.calls += 1;
  try {
    const reply = await client.call(action, data);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    const good = reply.ok !== false && check(reply);
    status[good ? "ok" : "failed"] += 1;
    if (good) status.lastOk = { action, requestId: reply.requestId, ms };
    log({ action, requestId: reply.requestId, ok: good, result: reply.result, error: reply.error, ms: Number(ms.toFixed(2)) });
    return { action, ok: good, ms: Number(ms.toFixed(2)) };
  } catch (err) {
    status.failed += 1;
    status.lastError = err.message;
    log({ action, ok: false, error: err.message });
    return { action, ok: false, error: err.message };
  }
}

async function round(client) {
  const n = status.rounds;
  const results = [
    await timedCall(client, "sum", [n, 1, 2], (reply) => reply.result === n + 3),
    // Seed-era reply: the configs are merged at the top level, as Laravel's command does.
    await timedCall(client, "configs", null, (reply) => typeof reply.locale === "string"),
  ];
  status.rounds += 1;
  status.updatedAt = Date.now() / 1000;
  fs.writeFileSync(statusFile + ".tmp", JSON.stringify(status));
  fs.renameSync(statusFile + ".tmp", statusFile);
  if (announceChannel) {
    const payload = { round: n, calls: status.calls, succeeded: status.ok, failures: status.failed, results };
    await client.push(announceChannel, "node_peer", payload).catch((err) => log({ announce: announceChannel, error: err.message }));
  }
}

async function main() {
  const url = env.REDIS_URL || "redis://redis:6379/0";
  const client = new SeedClient(url, channel, redisOptions());
  for (const connection of [client.sub, client.pub]) {
    connection.on("error", (err) => { if (err.message !== status.lastError) log({ redis: err.message }); status.lastError = err.message; });
  }
  let stopping = false;
  const stop = () => { stopping = true; client.close(); process.exit(0); };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await client.start();
  log({ started: { channel, intervalMs, announceChannel } });
  while (!stopping) {
    await round(client);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

main().catch((err) => { log({ fatal: err.message }); process.exit(1); });
