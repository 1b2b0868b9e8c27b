// The bare Node.js pair's caller: ioredis, the seed protocol, pending calls in a Map, no
// framework: the same-run reference.
//   node ioredis_caller.js REDIS_URL CHANNEL INFLIGHT SECONDS
// Prints one JSON line (load.js).
import Redis from "ioredis";
import { measure, PAYLOAD, TIMEOUT_MS } from "./load.js";

const [url, channel, inflight, seconds] = process.argv.slice(2);
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
const call = () => new Promise((resolve, reject) => {
  const requestId = `${prefix}-${seq++}`;
  const timer = setTimeout(() => { pending.delete(requestId); reject(new Error("timeout")); }, TIMEOUT_MS);
  pending.set(requestId, { resolve, timer });
  pub.publish(`${channel}_sender`, JSON.stringify({ action: "echo", data: PAYLOAD, requestId, source: "nodejs" }));
});
await measure(call, Number(inflight), Number(seconds));
sub.disconnect();
pub.disconnect();
