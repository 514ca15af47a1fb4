// Refresh tokens of the legacy API through matrix-js-sdk 43: loginRequest with
// refresh_token: true, MatrixClient.refreshToken (POST /v3/refresh), the new access token
// on the client, and the old refresh token refused once the new pair was used.
export default async function ({ sdk, baseUrl, args, errorOf }) {
  const anon = sdk.createClient({ baseUrl });
  const session = await anon.loginRequest({
    type: "m.login.password", identifier: { type: "m.id.user", user: args.user }, password: args.password,
    refresh_token: true, device_id: "JSREFRESH",
  });
  const client = sdk.createClient({
    baseUrl, userId: session.user_id, deviceId: session.device_id, accessToken: session.access_token,
  });
  const refreshed = await client.refreshToken(session.refresh_token);
  client.setAccessToken(refreshed.access_token);
  const me = await client.whoami();
  const replay = await errorOf(client.refreshToken(session.refresh_token));
  const next = await client.refreshToken(refreshed.refresh_token);
  return {
    login: { hasRefresh: typeof session.refresh_token === "string", expiresInMs: session.expires_in_ms },
    refreshed: { changed: refreshed.access_token !== session.access_token, expiresInMs: refreshed.expires_in_ms,
                 newRefresh: refreshed.refresh_token !== session.refresh_token },
    me, replay, nextOk: typeof next.access_token === "string",
  };
}
