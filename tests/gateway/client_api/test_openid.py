"""OpenID tokens: a client asks for one, an integration checks it over federation."""

from __future__ import annotations

from .conftest import auth_header, register

C = "/_matrix/client/v3"


async def test_openid_token_round_trip(hs, client):
    reg = await register(client, "olga")
    h = auth_header(reg["access_token"])
    resp = await client.post(f"{C}/user/@olga:hs.test/openid/request_token", json={}, headers=h)
    token = await resp.json()
    assert token["token_type"] == "Bearer" and token["matrix_server_name"] == "hs.test" and token["expires_in"] == 3600
    # The integration asks our federation API who this is (no X-Matrix needed).
    info = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": token["access_token"]})
    assert info.status == 200 and await info.json() == {"sub": "@olga:hs.test"}
    # Unknown, missing, expired tokens; and tokens for someone else.
    bad = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": "nope"})
    assert bad.status == 401 and (await bad.json())["errcode"] == "M_UNKNOWN_TOKEN"
    missing = await client.get("/_matrix/federation/v1/openid/userinfo")
    assert missing.status == 401
    real_clock = hs.clock_ms
    hs.clock_ms = lambda: real_clock() + 3601 * 1000
    expired = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": token["access_token"]})
    assert expired.status == 401
    hs.clock_ms = real_clock
    other = await client.post(f"{C}/user/@someone:hs.test/openid/request_token", json={}, headers=h)
    assert other.status == 403
    # The access token itself is not an OpenID token.
    as_openid = await client.get("/_matrix/federation/v1/openid/userinfo", params={"access_token": reg["access_token"]})
    assert as_openid.status == 401
