// NestJS's Redis transport, caller side: ClientProxy.send() to the responder's pattern.
//   node nest_caller.js REDIS_URL CHANNEL INFLIGHT SECONDS
// Prints one JSON line (load.js).
import "reflect-metadata";
import { Logger } from "@nestjs/common";
import { ClientProxyFactory } from "@nestjs/microservices";
import { firstValueFrom, timeout } from "rxjs";
import { measure, PAYLOAD, TIMEOUT_MS } from "./load.js";
import { echoPattern, redisTransport } from "./nest.js";

const [url, channel, inflight, seconds] = process.argv.slice(2);
Logger.overrideLogger(false);
const client = ClientProxyFactory.create(redisTransport(url));
await client.connect();
const pattern = echoPattern(channel);
const call = () => firstValueFrom(client.send(pattern, PAYLOAD).pipe(timeout(TIMEOUT_MS)));
await measure(call, Number(inflight), Number(seconds));
await client.close();
