// The seed's LaravelService.js protocol, without its leaks: publish
// {action, data, requestId, source: "nodejs"} on <channel>_sender and resolve the pending call
// whose requestId a message on <channel> repeats. One listener and one Map for all calls;
// every timer is cleared; a malformed message is skipped, not thrown.
"use strict";
const Redis = require("ioredis");
const { randomUUID } = require("crypto");

class SeedClient {
  // options: ioredis options (username, password, ...); timeoutMs: the seed's 5 s.
  constructor(url, channel, { timeoutMs = 5000, onPush = () => {}, ...options } = {}) {
    this.channel = channel;
    this.timeoutMs = timeoutMs;
    this.sub = new Redis(url, options);
    this.pub = new Redis(url, options);
    this.pending = new Map();
    this.sub.on("message", (_channel, message) => {
      let reply;
      try { reply = JSON.parse(message); } catch { return; }
      if (!reply || typeof reply !== "object") return;
      const settle = reply.requestId != null && this.pending.get(reply.requestId);
      if (settle) { this.pending.delete(reply.requestId); settle(reply); }
      else if (reply.requestId == null && reply.source !== "nodejs") onPush(reply);
    });
  }

  async start() { await this.sub.subscribe(this.channel); }

  call(action, data = null) {
    return new Promise((resolve, reject) => {
      const requestId = randomUUID();
      const timer = setTimeout(() => { this.pending.delete(requestId); reject(new Error("Timeout exceeded")); }, this.timeoutMs);
      this.pending.set(requestId, (reply) => { clearTimeout(timer); resolve(reply); });
      const request = JSON.stringify({ action, data, requestId, source: "nodejs" });
      this.pub.publish(`${this.channel}_sender`, request).catch((err) => {
        if (this.pending.delete(requestId)) { clearTimeout(timer); reject(err); }
      });
    });
  }

  // A seed-style push (requestId null) on any channel, e.g. the shared one for browsers.
  push(channel, action, payload) {
    const message = { ...payload, source: "nodejs", action, requestId: null, data: payload };
    return this.pub.publish(channel, JSON.stringify(message));
  }

  close() { this.sub.disconnect(); this.pub.disconnect(); }
}

module.exports = { SeedClient };
