// NestJS's Redis transport, responder side: a microservice whose controller has one
// @MessagePattern handler that returns its payload.
//   node nest_responder.js REDIS_URL CHANNEL
// Prints "ready" once Redis counts the handler's subscription.
// Plain JS, no build step: the decorators are applied with Reflect.decorate, as TypeScript's
// emitted code does.
import "reflect-metadata";
import { Controller, Module } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import { MessagePattern } from "@nestjs/microservices";
import { echoPattern, redisTransport } from "./nest.js";

const [url, channel] = process.argv.slice(2);
const pattern = echoPattern(channel);

class EchoController {
  echo(data) {
    return data;
  }
}
Reflect.decorate([MessagePattern(pattern)], EchoController.prototype, "echo",
  Object.getOwnPropertyDescriptor(EchoController.prototype, "echo"));
Reflect.decorate([Controller()], EchoController);

class AppModule {}
Reflect.decorate([Module({ controllers: [EchoController] })], AppModule);

const app = await NestFactory.createMicroservice(AppModule, { ...redisTransport(url), logger: false });
app.enableShutdownHooks(); // closes on SIGTERM
await app.listen();
// listen() resolves once connected; the SUBSCRIBE it sent is not awaited, so wait for Redis to
// count it before saying "ready" (the caller's first request would otherwise be lost).
const [pub] = app.unwrap();
while (Number((await pub.pubsub("NUMSUB", pattern))[1]) < 1) await new Promise((r) => setTimeout(r, 10));
process.stdout.write("ready\n");
