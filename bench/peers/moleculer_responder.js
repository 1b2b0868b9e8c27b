// Moleculer's Redis transporter, responder side: a broker with one service, bench, whose echo
// action returns its params.
//   node moleculer_responder.js REDIS_URL CHANNEL
// Prints "ready" once the broker has started (connected and subscribed).
import { broker as createBroker } from "./moleculer.js";

const [url, channel] = process.argv.slice(2);
const broker = createBroker(url, channel);
broker.createService({
  name: "bench",
  actions: {
    echo(ctx) {
      return ctx.params;
    },
  },
});
await broker.start(); // the broker stops itself on SIGTERM
process.stdout.write("ready\n");
