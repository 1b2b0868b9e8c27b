#!/usr/bin/env node
// Issue a browser token for ws_gateway from a Node.js backend: HS256 with Node's built-in
// crypto only (no npm package). Copy `issueToken` into your app's login/session route and
// hand the token to your page, which sends {"type": "auth", "token": ...} as its first frame.
//
//   GATEWAY_JWT_SECRET=... node examples/issue_token.js alice "echo,sum" 300
//   (or GATEWAY_JWT_SECRET_FILE=/run/secrets/gateway_jwt_secret)
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");

const base64url = (input) => Buffer.from(input).toString("base64url");

/**
 * @param {string} secret  the gateway's GATEWAY_JWT_SECRET (32+ bytes)
 * @param {object} claims  sub (your user id), actions (names, or ["*"]), optional events
 * @param {number} ttlSeconds  keep it short (minutes): the page refreshes on its open socket
 */
function issueToken(secret, { sub, actions, events }, ttlSeconds = 300) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub: String(sub), iat: now, exp: now + ttlSeconds, actions };
  if (events) payload.events = events;
  const signingInput = `${base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${base64url(JSON.stringify(payload))}`;
  const signature = crypto.createHmac("sha256", secret).update(signingInput).digest("base64url");
  return `${signingInput}.${signature}`;
}

function readSecret() {
  if (process.env.GATEWAY_JWT_SECRET_FILE) return fs.readFileSync(process.env.GATEWAY_JWT_SECRET_FILE, "utf8").trim();
  if (process.env.GATEWAY_JWT_SECRET) return process.env.GATEWAY_JWT_SECRET;
  throw new Error("set GATEWAY_JWT_SECRET or GATEWAY_JWT_SECRET_FILE");
}

if (require.main === module) {
  const [sub = "alice", actions = "*", ttl = "300"] = process.argv.slice(2);
  process.stdout.write(issueToken(readSecret(), { sub, actions: actions.split(",") }, Number(ttl)) + "\n");
}

module.exports = { issueToken };
