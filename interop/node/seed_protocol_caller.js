// A caller written to the seed's protocol (as the seed's LaravelService.js speaks it), for
// the host interop tests:
//
//   node seed_protocol_caller.js REDIS_URL CHANNEL ACTION [DATA_JSON] [COUNT]
//
// Prints each reply as a JSON line; exits 1 on timeout.
"use strict";
const { SeedClient } = require("./seed_client");

async function main() {
  const [url, channel, action, dataJson = "null", countText = "1"] = process.argv.slice(2);
  const client = new SeedClient(url, channel);
  await client.start();
  const data = JSON.parse(dataJson);
  let code = 0;
  try {
    const replies = await Promise.all(Array.from({ length: Number(countText) }, () => client.call(action, data)));
    for (const reply of replies) process.stdout.write(JSON.stringify(reply) + "\n");
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    code = 1;
  }
  client.close();
  process.exitCode = code;
}

main();
