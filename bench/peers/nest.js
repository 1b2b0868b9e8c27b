// What both NestJS scripts share: the Redis transport's options and the message pattern.
import { Transport } from "@nestjs/microservices";

// Transport.REDIS with ioredis's host and port, every other option at Nest's default.
export function redisTransport(url) {
  const { hostname, port } = new URL(url);
  return { transport: Transport.REDIS, options: { host: hostname, port: Number(port) } };
}

// One pattern per run (the bench's fresh channel name), so runs never see each other.
export const echoPattern = (channel) => `${channel}.echo`;
