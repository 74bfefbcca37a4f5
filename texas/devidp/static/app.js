// texas dev page: mint a token at the dev identity provider, then introspect it through the
// dev IdP's /api/introspect (which forwards to the service, so no CORS is needed).
"use strict";

const PERSON_PROVIDERS = new Set(["idporten", "tokenx"]);
const $ = (id) => document.getElementById(id);
let config = null;

function provider() {
  return document.querySelector('input[name="provider"]:checked').value;
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function b64urlDecode(part) {
  const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)), (c) =>
    c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

// Decode what is really in the token, rather than trusting what the IdP said it signed.
function decodeToken(token) {
  const [header, payload] = token.split(".");
  return { header: JSON.parse(b64urlDecode(header)), claims: JSON.parse(b64urlDecode(payload)) };
}

async function postJson(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let data;
  try {
    data = await resp.json();
  } catch {
    throw new Error(`${url} answered ${resp.status} without JSON.`);
  }
  if (!resp.ok && data && data.error && data.active === undefined) {
    throw new Error(data.error);
  }
  return data;
}

function showKey(alg, kid) {
  $("alg").textContent = alg;
  $("kid").textContent = kid;
  $("kid").title = kid;
}

function onProviderChange() {
  const name = provider();
  const info = config.providers.find((p) => p.name === name);
  $("audience").value = info.audience;
  for (const el of document.querySelectorAll(".person-only")) {
    el.hidden = !PERSON_PROVIDERS.has(name);
  }
  $("audience-note").hidden = name !== "maskinporten";
}

function buildRequest() {
  const name = provider();
  let claims = {};
  const extra = $("extra-claims").value.trim();
  if (extra) {
    try {
      claims = JSON.parse(extra);
    } catch {
      throw new Error("Extra claims are not valid JSON.");
    }
    if (claims === null || typeof claims !== "object" || Array.isArray(claims)) {
      throw new Error("Extra claims must be a JSON object.");
    }
  }
  const base = { aud: $("audience").value.trim() };
  let level;
  if (PERSON_PROVIDERS.has(name)) {
    base.pid = $("pid").value.trim();
    level = $("level").value;
    if (!level) base.acr = null; // "none": leave acr out of the token
  }
  const expires = $("expires-in").value.trim();
  const request = { claims: { ...base, ...claims } };
  if (level) request.level = level;
  if (expires !== "") request.expires_in = Number.parseInt(expires, 10);
  return { name, request };
}

async function introspect() {
  const token = $("token").value;
  if (!token) return;
  const body = { identity_provider: provider(), token };
  const required = $("require-level").value;
  if (required) body.level = required;
  $("introspection").textContent = "…";
  const verdict = $("verdict");
  try {
    const answer = await postJson("/api/introspect", body);
    $("introspection").textContent = pretty(answer);
    verdict.hidden = false;
    verdict.textContent = answer.active ? "active" : `inactive: ${answer.reason || "?"}`;
    verdict.className = answer.active ? "verdict ok" : "verdict bad";
  } catch (err) {
    $("introspection").textContent = String(err.message || err);
    verdict.hidden = false;
    verdict.textContent = "no answer";
    verdict.className = "verdict bad";
  }
}

async function mint(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  let built;
  try {
    built = buildRequest();
  } catch (err) {
    $("form-error").textContent = err.message;
    return;
  }
  try {
    const minted = await postJson(`/${built.name}/token`, built.request);
    $("token").value = minted.access_token;
    const decoded = decodeToken(minted.access_token);
    $("header").textContent = pretty(decoded.header);
    $("claims").textContent = pretty(decoded.claims);
    $("copy").disabled = false;
    $("introspect").disabled = false;
  } catch (err) {
    $("form-error").textContent = String(err.message || err);
    return;
  }
  await introspect();
}

async function rotate() {
  $("rotate-status").textContent = "Rotating…";
  try {
    const answer = await postJson("/rotate", {});
    showKey(config.alg, answer.kid);
    $("rotate-status").textContent =
      `New signing key; ${answer.published.length} keys published. ` +
      "Tokens signed before keep working until they expire.";
  } catch (err) {
    $("rotate-status").textContent = String(err.message || err);
  }
}

async function copyToken() {
  try {
    await navigator.clipboard.writeText($("token").value);
    $("copy").textContent = "Copied";
  } catch {
    $("token").select(); // clipboard API needs a secure context; let the user copy instead
    $("copy").textContent = "Selected";
  }
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
}

async function init() {
  const resp = await fetch("/api/config");
  config = await resp.json();
  showKey(config.alg, config.kid);
  $("pid").value = config.default_pid;
  $("expires-in").value = String(config.default_expires_in);
  if (config.introspect_url) $("introspect-url").textContent = config.introspect_url;
  for (const radio of document.querySelectorAll('input[name="provider"]')) {
    radio.addEventListener("change", onProviderChange);
  }
  onProviderChange();
  $("mint-form").addEventListener("submit", mint);
  $("rotate").addEventListener("click", rotate);
  $("copy").addEventListener("click", copyToken);
  $("introspect").addEventListener("click", introspect);
  document.body.dataset.ready = "true"; // for scripted drivers (tests/test_dev_browser.py)
}

document.addEventListener("DOMContentLoaded", () => {
  init().catch((err) => {
    $("form-error").textContent = `Could not load the dev configuration: ${err.message || err}`;
  });
});
