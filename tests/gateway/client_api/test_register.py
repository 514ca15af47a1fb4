"""GET /_matrix/client/v1/register/m.login.registration_token/validity: tokens the admin
API made are valid until used up or expired; rate limited; 403 without registration."""

from __future__ import annotations

import pytest

C1 = "/_matrix/client/v1/register/m.login.registration_token/validity"


async def valid(client, token) -> bool:
    resp = await client.get(C1, params={"token": token})
    assert resp.status == 200
    return (await resp.json())["valid"]


@pytest.mark.parametrize("config_overrides", [
    {"rc_registration_token_validity": {"per_second": 1000, "burst_count": 1000}}])
async def test_token_validity(client, hs):
    now = [10_000_000]
    hs.clock_ms = lambda: now[0]
    await hs.auth.store.create_registration_token("once", 1, None)
    await hs.auth.store.create_registration_token("soon", None, now[0] + 1000)
    assert await valid(client, "once") and await valid(client, "soon")
    assert not await valid(client, "never-made")
    # The unstable path of MSC3231 answers the same.
    resp = await client.get("/_matrix/client/unstable/org.matrix.msc3231/register/"
                            "org.matrix.msc3231.login.registration_token/validity", params={"token": "once"})
    assert (await resp.json()) == {"valid": True}
    await hs.auth.store.use_registration_token("once")
    assert not await valid(client, "once")
    now[0] += 2000
    assert not await valid(client, "soon")
    resp = await client.get(C1)
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"


@pytest.mark.parametrize("config_overrides", [{"enable_registration": False}])
async def test_no_registration_no_tokens(client, hs):
    await hs.auth.store.create_registration_token("t", None, None)
    resp = await client.get(C1, params={"token": "t"})
    assert resp.status == 403 and (await resp.json())["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("config_overrides", [
    {"rc_registration_token_validity": {"per_second": 0.001, "burst_count": 3}}])
async def test_guessing_is_rate_limited(client):
    statuses = [(await client.get(C1, params={"token": f"guess{i}"})).status for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
