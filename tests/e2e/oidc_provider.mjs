// A real OpenID provider (npm oidc-provider) on loopback, for the SSO end-to-end tests.
// Usage: node oidc_provider.mjs <path to oidc-provider's lib/index.js> <port> <client JSON>
// Logs in anyone: the dev login form takes any username (it becomes the subject).
// Prints "READY <issuer>" once listening.
import { pathToFileURL } from "node:url";

const [modulePath, portArg, clientJson] = process.argv.slice(2);
const { default: Provider } = await import(pathToFileURL(modulePath).href);
const port = Number(portArg);
const client = JSON.parse(clientJson);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...client,
  }],
  // Profile claims go into the id_token too (not only the userinfo endpoint).
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], profile: ["name", "preferred_username"], email: ["email", "email_verified"] },
  // Back-channel logout: ending the session at /session/end POSTs a logout token to each
  // client's backchannel_logout_uri (the id_token then carries a sid).
  features: { devInteractions: { enabled: true }, backchannelLogout: { enabled: true } },
  cookies: { keys: ["e2e-test-cookie-key-not-secret"] },
  // Its outgoing requests (back-channel logout tokens) go to our gateway on loopback, which
  // oidc-provider's SSRF guard refuses: drop the guard in this test-only provider.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        const name = id.charAt(0).toUpperCase() + id.slice(1);
        return { sub: id, name: `${name} Example`, preferred_username: id, email: `${id}@idp.example`,
                 email_verified: true };
      },
    };
  },
});
provider.proxy = false;
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.on("backchannel.error", (ctx, err) => console.error("backchannel.error", err));
provider.listen(port, "127.0.0.1", () => console.log(`READY ${issuer}`));
