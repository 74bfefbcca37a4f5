// texas dev page: mint a token at the dev identity provider, then introspect it through the
// dev IdP's /api/introspect; ask the service for a machine token (/api/token) or exchange a
// minted token (/api/token/exchange). The dev IdP forwards all three to the service, so no
// CORS is needed.
"use strict";

const PERSON_PROVIDERS = new Set(["idporten", "tokenx"]);
const ENTRA_SCOPE = {
  target: "api://dev-gcp.team.app/.default",
  note: "(the scope: api://<cluster>.<namespace>.<app>/.default)",
};
const GRANTS = {
  machine: {
    maskinporten: { target: "nav:test/api", note: "(the scope; several space-separated)" },
    azuread: ENTRA_SCOPE,
  },
  exchange: {
    tokenx: {
      target: "dev-gcp:team:app",
      note: "(<cluster>:<namespace>:<app>)",
      users: ["idporten", "tokenx"],
      none: "Mint an ID-porten or TokenX token above first.",
    },
    azuread: {
      ...ENTRA_SCOPE,
      users: ["azuread"],
      none: "Mint an Entra ID token above first.",
    },
  },
};
const $ = (id) => document.getElementById(id);
let config = null;
const mintedTokens = []; // tokens minted on this page, newest first: {provider, token, claims, at}

function checked(name) {
  return document.querySelector(`input[name="${name}"]:checked`).value;
}

function provider() {
  return checked("provider");
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
    mintedTokens.unshift({
      provider: built.name, token: minted.access_token, claims: decoded.claims, at: new Date(),
    });
    refreshUserTokens();
  } catch (err) {
    $("form-error").textContent = String(err.message || err);
    return;
  }
  await introspect();
}

// Machine tokens and token exchange: the service's answer as it is, and the token decoded.

async function callService(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try {
    data = JSON.parse(text);
  } catch {
    // not JSON: shown as text below
  }
  return { status: resp.status, data, text };
}

function showGrant(prefix, { status, data, text }) {
  const verdict = $(`${prefix}-verdict`);
  verdict.hidden = false;
  $(`${prefix}-answer`).textContent = data ? pretty(data) : `HTTP ${status}: ${text}`;
  $(`${prefix}-header`).textContent = "—";
  $(`${prefix}-claims`).textContent = "—";
  if (status === 200 && data && typeof data.access_token === "string") {
    try {
      const decoded = decodeToken(data.access_token);
      $(`${prefix}-header`).textContent = pretty(decoded.header);
      $(`${prefix}-claims`).textContent = pretty(decoded.claims);
    } catch {
      $(`${prefix}-claims`).textContent = "The access token is not a JWT.";
    }
    verdict.textContent = `token, expires in ${data.expires_in} s`;
    verdict.className = "verdict ok";
  } else {
    verdict.textContent = data && data.error ? `${status} ${data.error}` : `HTTP ${status}`;
    verdict.className = "verdict bad";
  }
}

async function requestGrant(prefix, url, body) {
  $(`${prefix}-answer`).textContent = "…";
  try {
    showGrant(prefix, await callService(url, body));
  } catch (err) {
    $(`${prefix}-answer`).textContent = String(err.message || err);
    $(`${prefix}-verdict`).hidden = false;
    $(`${prefix}-verdict`).textContent = "no answer";
    $(`${prefix}-verdict`).className = "verdict bad";
  }
}

function onGrantProviderChange(kind) {
  const name = checked(`${kind}-provider`);
  const grant = GRANTS[kind][name];
  $(`${kind}-target`).value = grant.target;
  $(`${kind}-target-note`).textContent = grant.note;
  if (kind === "exchange") refreshUserTokens();
}

function tokenLabel(minted) {
  const claims = minted.claims;
  const who = claims.pid || claims.NAVident || claims.sub || "no subject";
  const expired = typeof claims.exp === "number" && claims.exp * 1000 < Date.now() ? " · expired" : "";
  return `${minted.provider} · ${who} · minted ${minted.at.toLocaleTimeString()}${expired}`;
}

function refreshUserTokens() {
  const grant = GRANTS.exchange[checked("exchange-provider")];
  const select = $("exchange-user-token");
  const kept = select.value;
  const usable = mintedTokens.filter((m) => grant.users.includes(m.provider));
  select.replaceChildren(
    ...usable.map((m) => {
      const option = document.createElement("option");
      option.value = m.token;
      option.textContent = tokenLabel(m);
      return option;
    }),
  );
  if (usable.some((m) => m.token === kept)) select.value = kept;
  $("exchange-user-note").textContent = usable.length ? "(minted on this page)" : grant.none;
  $("exchange-get").disabled = usable.length === 0;
}

async function machineToken(event) {
  event.preventDefault();
  const body = { identity_provider: checked("machine-provider"), target: $("machine-target").value.trim() };
  const resource = $("machine-resource").value.trim();
  if (resource) body.resource = resource;
  if ($("machine-skip-cache").checked) body.skip_cache = true;
  await requestGrant("machine", "/api/token", body);
}

async function exchangeToken(event) {
  event.preventDefault();
  const body = {
    identity_provider: checked("exchange-provider"),
    target: $("exchange-target").value.trim(),
    user_token: $("exchange-user-token").value,
  };
  if ($("exchange-skip-cache").checked) body.skip_cache = true;
  await requestGrant("exchange", "/api/token/exchange", body);
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
  if (config.token_url) $("token-url").textContent = config.token_url;
  if (config.exchange_url) $("exchange-url").textContent = config.exchange_url;
  for (const radio of document.querySelectorAll('input[name="provider"]')) {
    radio.addEventListener("change", onProviderChange);
  }
  onProviderChange();
  for (const kind of ["machine", "exchange"]) {
    for (const radio of document.querySelectorAll(`input[name="${kind}-provider"]`)) {
      radio.addEventListener("change", () => onGrantProviderChange(kind));
    }
    onGrantProviderChange(kind);
  }
  $("machine-form").addEventListener("submit", machineToken);
  $("exchange-form").addEventListener("submit", exchangeToken);
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
