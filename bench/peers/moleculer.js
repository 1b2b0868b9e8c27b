// What both Moleculer scripts share: the broker's options.
import { ServiceBroker } from "moleculer";

// The Redis transporter from a URL, logging off, every other option at Moleculer's default.
// The namespace is the run's fresh channel name, so runs never see each other's nodes.
export function broker(url, channel) {
  return new ServiceBroker({ namespace: channel, transporter: url, logger: false });
}
