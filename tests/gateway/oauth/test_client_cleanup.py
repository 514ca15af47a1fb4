"""Client registrations do not pile up: unused ones are deleted after a day, never one with a
live session (spec "Client registration"); registrations, device authorisations and
authorisation requests are rate limited per address (``rc_oauth_registration``)."""

from __future__ import annotations

from .conftest import authorize, exchange, make_user, new_request, register_client, whoami

DAY = 24 * 3600 * 1000


async def test_unused_clients_go_and_clients_in_use_stay(client, hs, clock):
    await make_user(hs)
    unused = await register_client(client)
    req = new_request(await register_client(client))
    live = await exchange(client, req, (await authorize(client, req))["code"])
    ended_req = new_request(await register_client(client))
    ended = await exchange(client, ended_req, (await authorize(client, ended_req))["code"])
    resp = await client.post("/_gateway/oauth2/revoke", data={"token": ended["access_token"]})
    assert resp.status == 200
    clock.advance(2 * DAY)
    await register_client(client)  # registering is what cleans up
    assert await hs.oauth.get_client(unused) is None
    assert await hs.oauth.get_client(ended_req.client_id) is None
    assert await hs.oauth.get_client(req.client_id) is not None
    # The live session goes on: its client refreshes.
    resp = await client.post("/_gateway/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": live["refresh_token"], "client_id": req.client_id})
    assert resp.status == 200, await resp.json()
    assert (await whoami(client, (await resp.json())["access_token"]))[0] == 200
    # A client that asked for an authorisation a moment ago stays too.
    pending = await register_client(client)
    await client.get("/_gateway/oauth2/authorize", params=new_request(pending).query(), allow_redirects=False)
    clock.advance(DAY // 2)
    await register_client(client)
    assert await hs.oauth.get_client(pending) is not None


async def test_registration_device_and_authorisation_requests_are_rate_limited(client, hs):
    from gateway.config import RateLimit

    limiter = hs.ratelimiters["rc_oauth_registration"]
    limiter.limit = RateLimit(per_second=0.001, burst_count=2)
    client_id = await register_client(client)
    await register_client(client)
    resp = await client.post("/_gateway/oauth2/register", json={"client_uri": "https://app.example.org/",
                                                               "redirect_uris": ["https://app.example.org/cb"]})
    body = await resp.json()
    assert resp.status == 429 and body["error"] == "slow_down" and int(resp.headers["Retry-After"]) >= 1
    scope = "urn:matrix:client:api:* urn:matrix:client:device:ABC"
    for _ in range(2):
        resp = await client.post("/_gateway/oauth2/device", data={"client_id": client_id, "scope": scope})
        assert resp.status == 200
    resp = await client.post("/_gateway/oauth2/device", data={"client_id": client_id, "scope": scope})
    assert resp.status == 429 and (await resp.json())["error"] == "slow_down"
    req = new_request(client_id)
    for _ in range(2):
        resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
        assert resp.status == 302
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(), allow_redirects=False)
    assert resp.status == 429 and "Location" not in resp.headers and "Too many" in await resp.text()
