// Moleculer's Redis transporter, caller side: a broker without services that calls
// broker.call("bench.echo", payload) once it has discovered the responder's node.
//   node moleculer_caller.js REDIS_URL CHANNEL INFLIGHT SECONDS
// Prints one JSON line (load.js).
import { measure, PAYLOAD, TIMEOUT_MS } from "./load.js";
import { broker as createBroker } from "./moleculer.js";

const [url, channel, inflight, seconds] = process.argv.slice(2);
const broker = createBroker(url, channel);
await broker.start();
await broker.waitForServices("bench");
const call = () => broker.call("bench.echo", PAYLOAD, { timeout: TIMEOUT_MS });
await measure(call, Number(inflight), Number(seconds));
await broker.stop();
