// A minimal Element-Web-style client, bundled with matrix-js-sdk by esbuild and served from
// the client's own origin: every call to the homeserver is cross-origin, so CORS counts as it
// does for Element Web. It does what Element Web does with the OAuth 2.0 API:
//   first visit: discover auth_metadata, register this web client (redirect URI = this page),
//   keep the OAuth context in sessionStorage, go to the authorisation URL;
//   back with #code=...&state=...: exchange the code, whoami, sync, and show the result.

// matrix-js-sdk 43 uses Promise.withResolvers (newer browsers have it).
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

import { createClient, OAuth2 } from "matrix-js-sdk";

const quiet = { trace() {}, debug() {}, info() {}, log() {}, warn() {}, error() {}, getChild() { return quiet; } };
const status = (text) => { document.getElementById("status").textContent = text; };
const redirectUri = location.origin + location.pathname;

async function begin(baseUrl) {
  const meta = await createClient({ baseUrl, logger: quiet }).getAuthMetadata();
  const clientId = await OAuth2.registerClient(meta, {
    client_name: "Web test client", client_uri: location.origin + "/", redirect_uris: [redirectUri],
    application_type: "web",
  }, quiet);
  const oauth = new OAuth2(meta, { clientId }, quiet);
  const state = crypto.randomUUID();
  sessionStorage.setItem("oauth", JSON.stringify({ baseUrl, state, context: oauth.context }));
  location.assign(await oauth.generateAuthorizationCodeGrantUrl(state, redirectUri, "fragment"));
}

async function complete(params) {
  const saved = JSON.parse(sessionStorage.getItem("oauth"));
  if (params.get("state") !== saved.state) throw new Error("state mismatch");
  const meta = await createClient({ baseUrl: saved.baseUrl, logger: quiet }).getAuthMetadata();
  const oauth = new OAuth2(meta, saved.context, quiet);
  const tokens = await oauth.completeAuthorizationCodeGrant(params.get("code"), redirectUri);
  const who = await createClient({ baseUrl: saved.baseUrl, accessToken: tokens.access_token, logger: quiet }).whoami();
  const client = createClient({
    baseUrl: saved.baseUrl, userId: who.user_id, deviceId: saved.context.deviceId,
    accessToken: tokens.access_token, refreshToken: tokens.refresh_token, oauthClientId: saved.context.clientId,
    onTokenRefresh: () => {}, logger: quiet,
  });
  const synced = Promise.withResolvers();
  client.on("sync", (state) => { if (state === "PREPARED") synced.resolve(); });
  await client.startClient({ initialSyncLimit: 1 });
  await synced.promise;
  client.stopClient();
  document.body.dataset.deviceId = who.device_id;
  document.getElementById("whoami").textContent = who.user_id;
  status("synced");
}

(async () => {
  try {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.get("code")) await complete(params);
    else if (params.get("error")) status("refused: " + params.get("error"));
    else await begin(new URLSearchParams(location.search).get("hs"));
  } catch (e) {
    status("failed: " + (e?.message ?? e));
  }
})();
