// Runs one scenario against a homeserver with matrix-js-sdk 43 (the SDK inside Element
// Web), for the Python tests (tests/support/js_sdk.py).
//
//   node sdk_driver.mjs < request.json
//
// request: {sdk: path of matrix-js-sdk's lib/index.js, scenario: path of a .mjs module,
//           baseUrl, args: anything JSON}
// The scenario module's default export is `async (ctx) => result`; ctx has:
//   sdk, baseUrl, args
//   login(user, password, startOpts?)  log in with a password, start the client
//                                      (threads on, no presence) and wait for its first sync
//   waitFor(emitter, event, predicate?, timeoutMs?)  the next emission whose arguments pass
//   until(check, timeoutMs?)  polls check() (sync or async) until it returns a truthy value
//   errorOf(promise)          {errcode, httpStatus, message} of a rejected request (or null)
// The last stdout line is {"ok": true, "result": ...} or {"ok": false, "error", "stack"}.
// Clients are stopped and the process exits when the scenario ends.

// matrix-js-sdk 43 wants node >= 22; the one newer API it uses:
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

import { pathToFileURL } from "node:url";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const sdk = await import(pathToFileURL(request.sdk).href);

const silent = { trace() {}, debug() {}, info() {}, log() {}, warn() {}, error() {}, getChild() { return silent; } };
const logger = process.env.JS_SDK_DEBUG ? undefined : silent;
if (!process.env.JS_SDK_DEBUG && sdk.logger?.setLevel) sdk.logger.setLevel("silent");
const clients = [];

function waitFor(emitter, event, predicate = () => true, timeoutMs = 30000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`timed out waiting for ${event}`));
    }, timeoutMs);
    function listener(...values) {
      if (!predicate(...values)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(values);
    }
    emitter.on(event, listener);
  });
}

async function until(check, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms: ${check}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function login(user, password, startOpts = {}) {
  const anon = sdk.createClient({ baseUrl: request.baseUrl, logger });
  const session = await anon.loginRequest({
    type: "m.login.password", identifier: { type: "m.id.user", user }, password,
    initial_device_display_name: "matrix-js-sdk test",
  });
  const client = sdk.createClient({
    baseUrl: request.baseUrl, userId: session.user_id, deviceId: session.device_id,
    accessToken: session.access_token, timelineSupport: true, logger,
  });
  clients.push(client);
  const prepared = waitFor(client, sdk.ClientEvent.Sync, (state) => state === "PREPARED", 60000);
  await client.startClient({ threadSupport: true, disablePresence: true, ...startOpts });
  await prepared;
  return client;
}

async function errorOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return { errcode: e.errcode ?? null, httpStatus: e.httpStatus ?? null, message: String(e.message ?? e) };
  }
}

let outcome;
try {
  const scenario = (await import(pathToFileURL(request.scenario).href)).default;
  const ctx = { sdk, baseUrl: request.baseUrl, args: request.args ?? {}, login, waitFor, until, errorOf };
  outcome = { ok: true, result: (await scenario(ctx)) ?? null };
} catch (e) {
  outcome = { ok: false, error: String(e?.message ?? e), stack: String(e?.stack ?? "") };
}
for (const client of clients) {
  try { client.stopClient(); } catch { /* stopping is best effort */ }
}
process.stdout.write("\n" + JSON.stringify(outcome) + "\n", () => process.exit(0));
