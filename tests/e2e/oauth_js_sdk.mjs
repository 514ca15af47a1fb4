// matrix-js-sdk 43's own OAuth 2.0 code, driven step by step from the Python tests.
//
//   node oauth_js_sdk.mjs <matrix-js-sdk index.js> <command> <JSON args>
//
// Each command prints one JSON line (the result) and exits; state between steps (client ID,
// device ID, PKCE verifier, tokens) travels through the test as JSON, as a real client keeps
// it in its storage. Commands:
//   start   {baseUrl, redirectUri, clientUri, applicationType?}: discovery, registration,
//           the authorisation URL
//   finish  {baseUrl, redirectUri, context, code}: the code exchange, then a client with the
//           tokens that syncs, and whoami
//   refresh {baseUrl, context, tokens, waitExpiry}: a client whose access token has expired
//           makes a request; the SDK refreshes by itself
//   revoke  {baseUrl, context, tokens}: logout through the revocation endpoint
//   device  {baseUrl, deviceId}: the device authorisation grant (prints the user code first,
//           then waits for the tokens)

// matrix-js-sdk 43 wants node >= 22; the one newer API it uses:
if (!Promise.withResolvers) {
  Promise.withResolvers = function () {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}

const [sdkPath, command, rawArgs] = process.argv.slice(2);
const sdk = await import(sdkPath);
const args = JSON.parse(rawArgs);
const quiet = { trace() {}, debug() {}, info() {}, log() {}, warn() {}, error() {}, getChild() { return quiet; } };

function out(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

async function metadata(baseUrl) {
  return sdk.createClient({ baseUrl, logger: quiet }).getAuthMetadata();
}

async function start() {
  const meta = await metadata(args.baseUrl);
  const clientId = await sdk.OAuth2.registerClient(meta, {
    client_name: "js-sdk test client",
    client_uri: args.clientUri,
    redirect_uris: [args.redirectUri],
    application_type: args.applicationType ?? "web",
    logo_uri: new URL("/logo.png", args.clientUri).toString(),
  }, quiet);
  const oauth = new sdk.OAuth2(meta, { clientId }, quiet);
  const state = "st-" + Math.random().toString(36).slice(2);
  const url = await oauth.generateAuthorizationCodeGrantUrl(state, args.redirectUri, "fragment",
    args.prompt);
  out({ url, state, context: oauth.context, issuer: meta.issuer, account: meta.account_management_uri });
}

function clientWith(meta, context, tokens, onRefresh) {
  return sdk.createClient({
    baseUrl: args.baseUrl, userId: tokens.userId, deviceId: context.deviceId,
    accessToken: tokens.access_token, refreshToken: tokens.refresh_token, oauthClientId: context.clientId,
    onTokenRefresh: onRefresh ?? (() => {}), logger: quiet,
  });
}

async function syncOnce(client) {
  const { promise, resolve, reject } = Promise.withResolvers();
  client.on("sync", (state, _prev, data) => {
    if (state === "PREPARED" || state === "SYNCING") resolve(state);
    if (state === "ERROR") reject(data?.error ?? new Error("sync failed"));
  });
  await client.startClient({ initialSyncLimit: 1 });
  const state = await promise;
  client.stopClient();
  return state;
}

async function finish() {
  const meta = await metadata(args.baseUrl);
  const oauth = new sdk.OAuth2(meta, args.context, quiet);
  const tokens = await oauth.completeAuthorizationCodeGrant(args.code, args.redirectUri);
  const bare = sdk.createClient({ baseUrl: args.baseUrl, accessToken: tokens.access_token, logger: quiet });
  const who = await bare.whoami();
  const client = clientWith(meta, args.context, { ...tokens, userId: who.user_id });
  const sync = await syncOnce(client);
  const room = await client.createRoom({ name: "made with an OAuth token" });
  out({ tokens: { ...tokens, userId: who.user_id }, whoami: who, sync, roomId: room.room_id });
}

async function refresh() {
  const meta = await metadata(args.baseUrl);
  let refreshed = null;
  const client = clientWith(meta, args.context, args.tokens, (t) => { refreshed = t; });
  // The access token has expired (the test waited for the server to say so): the SDK gets
  // M_UNKNOWN_TOKEN, refreshes with its refresh token and retries, all by itself.
  const who = await client.whoami();
  const sync = await syncOnce(client);
  out({ whoami: who, sync, refreshed: refreshed && { accessToken: refreshed.accessToken,
    refreshToken: refreshed.refreshToken } });
}

async function revoke() {
  const meta = await metadata(args.baseUrl);
  const oauth = new sdk.OAuth2(meta, args.context, quiet);
  await oauth.revokeToken(args.tokens.access_token, "access_token");
  await oauth.revokeToken(args.tokens.refresh_token, "refresh_token");
  let errcode = null;
  try {
    await sdk.createClient({ baseUrl: args.baseUrl, accessToken: args.tokens.access_token, logger: quiet }).whoami();
  } catch (e) {
    errcode = e.errcode ?? String(e);
  }
  out({ revoked: true, whoamiAfter: errcode });
}

async function device() {
  const meta = await metadata(args.baseUrl);
  const clientId = await sdk.OAuth2.registerClient(meta, {
    client_name: "js-sdk device", client_uri: args.clientUri, application_type: "native",
    grant_types: ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
  }, quiet);
  const oauth = new sdk.OAuth2(meta, { clientId, deviceId: args.deviceId }, quiet);
  const session = await oauth.startDeviceAuthorizationGrant();
  out({ session });
  const tokens = await oauth.waitForDeviceAuthorizationGrant(session);
  const who = tokens.access_token
    ? await sdk.createClient({ baseUrl: args.baseUrl, accessToken: tokens.access_token, logger: quiet }).whoami()
    : null;
  out({ tokens, whoami: who });
}

try {
  await { start, finish, refresh, revoke, device }[command]();
  process.exit(0);
} catch (e) {
  out({ error: String(e?.message ?? e), errcode: e?.errcode, oauthError: e?.error });
  process.exit(1);
}
