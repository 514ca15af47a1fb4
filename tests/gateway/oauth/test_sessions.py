"""Refresh rotation, revocation (RFC 7009), device reuse, id_tokens, and sessions that
survive a restart."""

from __future__ import annotations

import jwt
import pytest

from gateway.oauth.id_tokens import at_hash
from gateway.server import HomeServer

from .conftest import authorize, exchange, login, make_user, new_request, register_client, server_config, \
    token_request, whoami


@pytest.fixture
async def alice(hs):
    return await make_user(hs)


async def refresh(client, client_id: str, refresh_token: str) -> tuple[int, dict]:
    return await token_request(client, grant_type="refresh_token", refresh_token=refresh_token, client_id=client_id)


async def test_refresh_rotation_and_retry(client, hs, alice):
    req, first = await login(client, hs)
    status, second = await refresh(client, req.client_id, first["refresh_token"])
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"] and second["expires_in"] == 300
    # The answer was "lost": retrying with the old refresh token works while the new access
    # token was never used, and the pair it replaces stops working.
    status, retried = await refresh(client, req.client_id, first["refresh_token"])
    assert status == 200
    assert (await whoami(client, second["access_token"]))[0] == 401
    assert (await refresh(client, req.client_id, second["refresh_token"]))[1]["error"] == "invalid_grant"
    # The old access token still works until the new one is first used...
    assert (await whoami(client, first["access_token"]))[0] == 200
    status, me = await whoami(client, retried["access_token"])
    assert status == 200 and me["device_id"] == req.device_id
    # ... and then it stops.
    assert (await whoami(client, first["access_token"]))[0] == 401
    # The next refresh goes on normally.
    status, third = await refresh(client, req.client_id, retried["refresh_token"])
    assert status == 200 and (await whoami(client, third["access_token"]))[0] == 200


async def test_refresh_replay_after_the_successor_was_used_ends_the_session(client, hs, alice):
    req, first = await login(client, hs)
    _, second = await refresh(client, req.client_id, first["refresh_token"])
    assert (await whoami(client, second["access_token"]))[0] == 200  # the new token is used
    # Considered compromised: the whole session and its device are gone.
    await replay_ends_the_session(client, hs, req, first, second)


async def replay_ends_the_session(client, hs, req, replayed: dict, latest: dict) -> None:
    status, body = await refresh(client, req.client_id, replayed["refresh_token"])
    assert status == 400 and body["error"] == "invalid_grant"
    assert (await whoami(client, latest["access_token"]))[0] == 401
    assert (await refresh(client, req.client_id, latest["refresh_token"]))[1]["error"] == "invalid_grant"
    assert await hs.auth.devices.get_device("@alice:hs.test", req.device_id) is None



async def test_replay_of_an_older_refresh_token_ends_the_session(client, hs, alice):
    """Spec "Refresh token grant": an old, invalidated refresh token used again means the
    session is compromised. Two refreshes later the first token had been forgotten, so its
    replay was answered as an unknown token and the thief's target session lived on."""
    req, first = await login(client, hs)
    _, second = await refresh(client, req.client_id, first["refresh_token"])
    assert (await whoami(client, second["access_token"]))[0] == 200
    _, third = await refresh(client, req.client_id, second["refresh_token"])
    assert (await whoami(client, third["access_token"]))[0] == 200
    _, fourth = await refresh(client, req.client_id, third["refresh_token"])
    assert (await whoami(client, fourth["access_token"]))[0] == 200
    await replay_ends_the_session(client, hs, req, first, fourth)


async def test_refresh_token_of_another_client_or_unknown(client, hs, alice):
    req, tokens = await login(client, hs)
    other = await register_client(client)
    assert (await refresh(client, other, tokens["refresh_token"]))[1]["error"] == "invalid_grant"
    assert (await refresh(client, req.client_id, "gwr_forged"))[1]["error"] == "invalid_grant"
    status, body = await token_request(client, grant_type="refresh_token", client_id=req.client_id)
    assert body["error"] == "invalid_request"
    # The legacy API's /refresh does not take OAuth refresh tokens (the two APIs do not mix).
    resp = await client.post("/_matrix/client/v3/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"
    assert (await refresh(client, req.client_id, tokens["refresh_token"]))[0] == 200  # unharmed


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
async def test_revocation_ends_both_tokens_and_the_device(client, hs, alice, which):
    req, tokens = await login(client, hs)
    resp = await client.post("/_gateway/oauth2/revoke", data={"token": tokens[which], "token_type_hint": which,
                                                              "client_id": req.client_id})
    assert resp.status == 200
    assert (await whoami(client, tokens["access_token"]))[0] == 401
    assert (await refresh(client, req.client_id, tokens["refresh_token"]))[1]["error"] == "invalid_grant"
    assert await hs.auth.devices.get_device(alice, req.device_id) is None
    # Again, or an unknown token: still 200 (RFC 7009 2.2).
    assert (await client.post("/_gateway/oauth2/revoke", data={"token": tokens[which]})).status == 200
    assert (await client.post("/_gateway/oauth2/revoke", data={"token": "never-issued"})).status == 200


async def test_revocation_refusals_and_legacy_tokens(client, hs, alice):
    resp = await client.post("/_gateway/oauth2/revoke", data={})
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
    resp = await client.post("/_gateway/oauth2/revoke", data={"token": "x", "token_type_hint": "id_token"})
    assert (await resp.json())["error"] == "unsupported_token_type"
    legacy = await (await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse battery"})).json()
    assert (await client.post("/_gateway/oauth2/revoke", data={"token": legacy["access_token"]})).status == 200
    assert (await whoami(client, legacy["access_token"]))[0] == 200  # a legacy token is no OAuth token


async def test_revocation_by_another_client_still_revokes(client, hs, alice):
    req, tokens = await login(client, hs)
    other = await register_client(client)
    resp = await client.post("/_gateway/oauth2/revoke", data={"token": tokens["access_token"], "client_id": other})
    assert resp.status == 200
    assert (await whoami(client, tokens["access_token"]))[0] == 401


async def test_logout_and_device_deletion_end_the_session(client, hs, alice):
    req, tokens = await login(client, hs)
    resp = await client.post("/_matrix/client/v3/logout", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert resp.status == 200
    assert (await refresh(client, req.client_id, tokens["refresh_token"]))[1]["error"] == "invalid_grant"


async def test_same_device_id_reuses_the_device_and_invalidates_earlier_tokens(client, hs, alice):
    req, first = await login(client, hs, device_id="PHONE12345")
    headers = {"Authorization": f"Bearer {first['access_token']}"}
    resp = await client.put("/_matrix/client/v3/devices/PHONE12345", json={"display_name": "My phone"}, headers=headers)
    assert resp.status == 200
    # A new registration of the client (as clients do every time), the same device ID.
    _, second = await login(client, hs, device_id="PHONE12345")
    assert (await whoami(client, first["access_token"]))[0] == 401
    assert (await refresh(client, req.client_id, first["refresh_token"]))[1]["error"] == "invalid_grant"
    status, me = await whoami(client, second["access_token"])
    assert status == 200 and me["device_id"] == "PHONE12345"
    device = await hs.auth.devices.get_device(alice, "PHONE12345")
    assert device.display_name == "My phone"  # the same device, not a new one
    # Another user asking for the same device ID gets a device of their own.
    await make_user(hs, "bob")
    await client.post("/_gateway/logout")  # (no CSRF: ignored) - sign bob in with a fresh browser
    client.session.cookie_jar.clear()
    _, bobs = await login(client, hs, device_id="PHONE12345", username="bob")
    assert (await whoami(client, bobs["access_token"]))[1]["user_id"] == "@bob:hs.test"
    assert (await whoami(client, second["access_token"]))[0] == 200


async def test_id_token_when_openid_is_asked_for(client, hs, alice):
    client_id = await register_client(client)
    req = new_request(client_id)
    scope = f"openid urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:{req.device_id}"
    params = await authorize(client, req, scope=scope, nonce="n-0S6_WzA2Mj")
    tokens = await exchange(client, req, params["code"])
    assert tokens["scope"] == scope
    jwks = await (await client.get("/_gateway/oauth2/keys.json")).json()
    header = jwt.get_unverified_header(tokens["id_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(tokens["id_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience=client_id,
                        issuer="http://localhost/")
    assert claims["sub"] == alice and claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["at_hash"] == at_hash(tokens["access_token"]) and claims["device_id"] == req.device_id
    info = await client.get("/_gateway/oauth2/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert (await info.json())["sub"] == alice
    assert (await client.get("/_gateway/oauth2/userinfo")).status == 401


async def test_a_restart_loses_nothing(client, hs, alice, tmp_path, database_config, oauth_overrides, clock):
    """Tokens, refresh tokens and a half-done authorisation all outlive the process."""
    req, tokens = await login(client, hs)
    req2 = new_request(req.client_id)
    pending = await client.get("/_gateway/oauth2/authorize", params=req2.query(), allow_redirects=False)
    assert pending.status == 302
    other = await HomeServer.open(server_config(database_config, tmp_path, oauth_overrides))
    other.clock_ms = clock
    try:
        owner = await other.auth.get_requester(tokens["access_token"])
        assert owner.user_id == alice and owner.oauth_session_id
        renewed = await other.oauth.token({"grant_type": "refresh_token", "client_id": req.client_id,
                                           "refresh_token": tokens["refresh_token"]})
        assert (await other.auth.get_requester(renewed["access_token"])).device_id == req.device_id
        # The signing key is shared: both processes publish the same JWKS.
        assert await other.oauth.id_tokens.jwks() == await hs.oauth.id_tokens.jwks()
    finally:
        await other.close()


async def test_legacy_refresh_tokens_are_refused_at_the_token_endpoint(client, hs, alice):
    req, _ = await login(client, hs)
    resp = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
        "password": "correct horse battery", "refresh_token": True})
    legacy = await resp.json()
    assert resp.status == 200 and legacy["refresh_token"]
    assert (await refresh(client, req.client_id, legacy["refresh_token"]))[1]["error"] == "invalid_grant"
    # ... nor revoked there (RFC 7009: 200, nothing happens); it still works at /refresh.
    assert (await client.post("/_gateway/oauth2/revoke", data={"token": legacy["refresh_token"]})).status == 200
    assert (await client.post("/_gateway/oauth2/revoke", data={"token": legacy["access_token"]})).status == 200
    assert (await whoami(client, legacy["access_token"]))[0] == 200
    resp = await client.post("/_matrix/client/v3/refresh", json={"refresh_token": legacy["refresh_token"]})
    assert resp.status == 200 and (await whoami(client, (await resp.json())["access_token"]))[0] == 200


async def test_a_locked_account_keeps_its_session_and_gets_no_new_one(client, hs, alice, clock):
    """https://spec.matrix.org/latest/client-server-api/#account-locking: M_USER_LOCKED, also
    once the access token expired (so the client waits instead of refreshing), and no new
    session; unlocked, the session carries on."""
    req, tokens = await login(client, hs)
    await hs.auth.users.set_flag(alice, "locked", True)
    status, body = await whoami(client, tokens["access_token"])
    assert (status, body["errcode"], body["soft_logout"]) == (401, "M_USER_LOCKED", True)
    clock.advance(3_600_000)  # the access token expires meanwhile
    status, body = await whoami(client, tokens["access_token"])
    assert (status, body["errcode"]) == (401, "M_USER_LOCKED")
    other = new_request(req.client_id)
    code = (await authorize(client, other))["code"]
    status, body = await token_request(client, grant_type="authorization_code", code=code, client_id=req.client_id,
                                       redirect_uri=other.redirect_uri, code_verifier=other.verifier)
    assert status == 400 and body["error"] == "access_denied"
    await hs.auth.users.set_flag(alice, "locked", False)
    status, body = await whoami(client, tokens["access_token"])
    assert (status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)  # expired: refresh
    status, fresh = await refresh(client, req.client_id, tokens["refresh_token"])
    assert status == 200 and (await whoami(client, fresh["access_token"]))[0] == 200


async def test_replaced_refresh_tokens_are_forgotten_after_a_week(client, hs, alice, clock):
    """The tombstones that recognise replays do not pile up: a week later they go."""
    req, tokens = await login(client, hs)
    for _ in range(4):
        _, tokens = await refresh(client, req.client_id, tokens["refresh_token"])
        assert (await whoami(client, tokens["access_token"]))[0] == 200
    count = "SELECT COUNT(*) FROM oauth_refresh_tokens"
    assert await hs.db.fetchval(count) == 5  # the live one, its predecessor, three tombstones
    clock.advance(8 * 24 * 3600 * 1000)
    status, tokens = await refresh(client, req.client_id, tokens["refresh_token"])
    assert status == 200
    assert await hs.db.fetchval(count) == 2
