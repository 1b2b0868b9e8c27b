// The bare Node.js pair's responder: ioredis, the seed protocol, no framework.
//   node ioredis_responder.js REDIS_URL CHANNEL
// Prints "ready" once subscribed; replies {source, action, requestId, ok, result} on CHANNEL.
import Redis from "ioredis";

const [url, channel] = process.argv.slice(2);
const sub = new Redis(url);
const pub = new Redis(url);
sub.on("message", (_channel, message) => {
  let request;
  try { request = JSON.parse(message); } catch { return; }
  if (!request || typeof request.action !== "string") return;
  const reply = { source: "nodejs-responder", action: request.action, requestId: request.requestId ?? null, ok: true, result: request.data };
  pub.publish(channel, JSON.stringify(reply));
});
await sub.subscribe(`${channel}_sender`);
process.stdout.write("ready\n");
process.on("SIGTERM", () => { sub.disconnect(); pub.disconnect(); });
