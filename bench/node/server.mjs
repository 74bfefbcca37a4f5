// The Node.js peer of the texas benchmark: what a team on Node would run, node:http plus
// panva's jose (what oasis validates with): createRemoteJWKSet + jwtVerify, checking RS256,
// iss, aud, exp and iat like texas, answering {"active": true, <claims>} or
// {"active": false, "error": ...}.
//
// Configured by the same environment as texas (BIND_ADDRESS, IDPORTEN_ISSUER,
// IDPORTEN_JWKS_URI, IDPORTEN_AUDIENCE); with WEB_CONCURRENCY=N it forks N workers
// with node:cluster, as gunicorn does for the Python targets.
//
//     cd bench/node && npm ci && node server.mjs

import cluster from "node:cluster";
import http from "node:http";
import { createRemoteJWKSet, jwtVerify } from "jose";

const LEEWAY_SECONDS = 60;
const MAX_BODY_BYTES = 1024 * 1024;
const workers = Number.parseInt(process.env.WEB_CONCURRENCY || "0", 10);

function bindAddress() {
  const address = process.env.BIND_ADDRESS || "127.0.0.1:3000";
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at) || "127.0.0.1", port: Number(address.slice(at + 1)) };
}

function send(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

function inactive(res, error) {
  send(res, 200, JSON.stringify({ active: false, error }));
}

function serve() {
  const issuer = process.env.IDPORTEN_ISSUER;
  const audience = process.env.IDPORTEN_AUDIENCE;
  const jwks = createRemoteJWKSet(new URL(process.env.IDPORTEN_JWKS_URI), { timeoutDuration: 5000 });
  const options = {
    issuer,
    audience,
    algorithms: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"],
    requiredClaims: ["exp", "iat"],
    clockTolerance: LEEWAY_SECONDS,
  };
  let ready = false;

  async function introspect(body, res) {
    let request;
    try {
      request = JSON.parse(body);
    } catch {
      return inactive(res, "The request body is not valid JSON.");
    }
    if (request === null || typeof request !== "object" || typeof request.token !== "string") {
      return inactive(res, "The request has no token.");
    }
    if (request.identity_provider !== "idporten") {
      return inactive(res, "The identity provider is not enabled.");
    }
    let payload;
    try {
      ({ payload } = await jwtVerify(request.token, jwks, options));
    } catch {
      return inactive(res, "The token is not valid.");
    }
    send(res, 200, JSON.stringify({ ...payload, active: true }));
  }

  const server = http.createServer({ keepAliveTimeout: 75_000 }, (req, res) => {
    if (req.method === "GET" && (req.url === "/readyz" || req.url === "/healthz")) {
      return send(res, ready ? 200 : 503, JSON.stringify({ ready }));
    }
    if (req.method !== "POST" || req.url !== "/api/v1/introspect") {
      return send(res, 404, JSON.stringify({ status: "not found" }));
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => {
      introspect(Buffer.concat(chunks).toString("utf8"), res).catch(() => inactive(res, "The request failed."));
    });
  });

  const { host, port } = bindAddress();
  server.listen(port, host);
  // Load the keys before answering ready, as the Python targets do.
  jwks.reload().then(
    () => {
      ready = true;
    },
    (error) => {
      console.error(`the JWKS could not be fetched: ${error.code || error.name}`);
      process.exit(1);
    },
  );
  process.on("SIGTERM", () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
  });
}

if (workers >= 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers)) worker.process.kill("SIGTERM");
    process.exit(0);
  });
} else {
  serve();
}
