// A caller written to the seed's protocol (as the seed's LaravelService.js speaks it):
// publish {action, data, requestId, source: "nodejs"} on <channel>_sender and wait on
// <channel> for the message with the same requestId. One listener, a Map of pending calls.
//
//   node seed_protocol_caller.js REDIS_URL CHANNEL ACTION [DATA_JSON] [COUNT]
//
// Prints each reply as a JSON line; exits 1 on timeout.
"use strict";
const Redis = require("ioredis");
const { randomUUID } = require("crypto");

async function main() {
  const [url, channel, action, dataJson = "null", countText = "1"] = process.argv.slice(2);
  const sub = new Redis(url);
  const pub = new Redis(url);
  const pending = new Map();
  sub.on("message", (_channel, message) => {
    let reply;
    try { reply = JSON.parse(message); } catch { return; }
    const resolve = reply && pending.get(reply.requestId);
    if (resolve) { pending.delete(reply.requestId); resolve(reply); }
  });
  await sub.subscribe(channel);
  const call = (data) => new Promise((resolve, reject) => {
    const requestId = randomUUID();
    const timer = setTimeout(() => { pending.delete(requestId); reject(new Error("Timeout exceeded")); }, 5000);
    pending.set(requestId, (reply) => { clearTimeout(timer); resolve(reply); });
    pub.publish(`${channel}_sender`, JSON.stringify({ action, data, requestId, source: "nodejs" }));
  });
  const data = JSON.parse(dataJson);
  let code = 0;
  try {
    const replies = await Promise.all(Array.from({ length: Number(countText) }, () => call(data)));
    for (const reply of replies) process.stdout.write(JSON.stringify(reply) + "\n");
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    code = 1;
  }
  sub.disconnect();
  pub.disconnect();
  process.exitCode = code;
}

main();
