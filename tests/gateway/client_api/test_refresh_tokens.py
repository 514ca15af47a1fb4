"""Refresh tokens and token lifetimes of the legacy API (spec "Refreshing access tokens",
"Soft logout"; Synapse's ``*_lifetime`` keys), on both database engines."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.oauth.conftest import Clock

from .conftest import auth_header, register

PASSWORD = "pw-" + "x" * 8


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def timed_hs(hs, clock):
    hs.clock_ms = clock  # services read the clock through hs
    return hs


async def login(client, refresh: bool | None = True, **extra) -> dict:
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": PASSWORD, **extra}
    if refresh is not None:
        body["refresh_token"] = refresh
    resp = await client.post("/_matrix/client/v3/login", json=body)
    result = await resp.json()
    assert resp.status == 200, result
    return result


async def whoami(client, token: str) -> tuple[int, dict]:
    resp = await client.get("/_matrix/client/v3/account/whoami", headers=auth_header(token))
    return resp.status, await resp.json()


async def refresh(client, token) -> tuple[int, dict]:
    resp = await client.post("/_matrix/client/v3/refresh", json={"refresh_token": token})
    return resp.status, await resp.json()


def is_unknown(answer: tuple[int, dict], *, soft: bool) -> bool:
    status, body = answer
    return status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is soft


async def test_login_without_refresh_token_gets_a_token_that_does_not_expire(timed_hs, client, clock):
    await register(client, "alice", PASSWORD)
    for asked in (None, False):
        tokens = await login(client, refresh=asked)
        assert "refresh_token" not in tokens and "expires_in_ms" not in tokens
        clock.advance(365 * 86_400_000)
        assert (await whoami(client, tokens["access_token"]))[0] == 200


async def test_refresh_gives_a_new_pair_and_an_expired_token_is_a_soft_logout(timed_hs, client, clock):
    await register(client, "alice", PASSWORD)
    first = await login(client, device_id="PHONE")
    assert first["expires_in_ms"] == 5 * 60_000 and first["refresh_token"].startswith("gwrf_")
    assert (await whoami(client, first["access_token"]))[1]["device_id"] == "PHONE"
    clock.advance(5 * 60_000)
    # Expired: soft logout (the device and its keys stay; the client refreshes).
    assert is_unknown(await whoami(client, first["access_token"]), soft=True)
    status, second = await refresh(client, first["refresh_token"])
    assert status == 200 and second["expires_in_ms"] == 5 * 60_000
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    status, me = await whoami(client, second["access_token"])
    assert status == 200 and me == {"user_id": "@alice:hs.test", "device_id": "PHONE", "is_guest": False}
    # The new access token was used: the old refresh token is revoked (not soft: it is gone).
    assert is_unknown(await refresh(client, first["refresh_token"]), soft=False)


async def test_old_refresh_token_may_be_retried_until_the_new_pair_is_used(timed_hs, client):
    await register(client, "alice", PASSWORD)
    first = await login(client)
    _, second = await refresh(client, first["refresh_token"])
    # The answer was lost: the client retries. The unused pair it replaces stops working.
    status, retried = await refresh(client, first["refresh_token"])
    assert status == 200
    assert is_unknown(await whoami(client, second["access_token"]), soft=False)
    assert is_unknown(await refresh(client, second["refresh_token"]), soft=False)
    # The old access token works until the new one is first used ...
    assert (await whoami(client, first["access_token"]))[0] == 200
    assert (await whoami(client, retried["access_token"]))[0] == 200
    # ... and then the old pair is gone.
    assert is_unknown(await whoami(client, first["access_token"]), soft=False)
    assert is_unknown(await refresh(client, first["refresh_token"]), soft=False)
    # The chain goes on.
    status, third = await refresh(client, retried["refresh_token"])
    assert status == 200 and (await whoami(client, third["access_token"]))[0] == 200


async def test_using_the_new_refresh_token_revokes_the_old_one(timed_hs, client):
    await register(client, "alice", PASSWORD)
    first = await login(client)
    _, second = await refresh(client, first["refresh_token"])
    status, third = await refresh(client, second["refresh_token"])  # second's access token never used
    assert status == 200
    assert is_unknown(await refresh(client, first["refresh_token"]), soft=False)
    assert is_unknown(await whoami(client, first["access_token"]), soft=False)
    assert (await whoami(client, third["access_token"]))[0] == 200


async def test_concurrent_refreshes_with_one_token_give_one_pair(timed_hs, client):
    await register(client, "alice", PASSWORD)
    first = await login(client)
    answers = await asyncio.gather(*(refresh(client, first["refresh_token"]) for _ in range(4)))
    winners = [body for status, body in answers if status == 200]
    assert len(winners) >= 1
    assert all(is_unknown(a, soft=False) for a in answers if a[0] != 200)
    # Whichever pair was handed out last works; the pairs it replaced do not.
    working = [w for w in winners if (await whoami(client, w["access_token"]))[0] == 200]
    assert len(working) == 1


async def test_registration_with_refresh_token_and_logout_revokes_it(timed_hs, client):
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": "bob", "password": PASSWORD, "auth": {"type": "m.login.dummy"}, "refresh_token": True})
    tokens = await resp.json()
    assert resp.status == 200 and tokens["refresh_token"] and tokens["expires_in_ms"] == 5 * 60_000
    status, renewed = await refresh(client, tokens["refresh_token"])
    assert status == 200
    resp = await client.post("/_matrix/client/v3/logout", headers=auth_header(renewed["access_token"]))
    assert resp.status == 200
    assert is_unknown(await refresh(client, renewed["refresh_token"]), soft=False)
    assert is_unknown(await refresh(client, tokens["refresh_token"]), soft=False)


async def test_bad_requests(timed_hs, client):
    await register(client, "alice", PASSWORD)
    resp = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD,
        "refresh_token": "yes"})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_BAD_JSON"
    resp = await client.post("/_matrix/client/v3/refresh", json={})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"
    resp = await client.post("/_matrix/client/v3/refresh", json={"refresh_token": 12})
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_MISSING_PARAM"
    assert is_unknown(await refresh(client, "gwrf_forged"), soft=False)
    # An access token is no refresh token.
    tokens = await login(client)
    assert is_unknown(await refresh(client, tokens["access_token"]), soft=False)


async def test_deactivated_account_cannot_refresh(timed_hs, client):
    await register(client, "alice", PASSWORD)
    tokens = await login(client)
    keep = await login(client)
    resp = await client.post("/_matrix/client/v3/account/deactivate", headers=auth_header(keep["access_token"]),
                             json={"auth": {"type": "m.login.password", "password": PASSWORD,
                                            "identifier": {"type": "m.id.user", "user": "alice"}}})
    assert resp.status == 200, await resp.text()
    assert is_unknown(await refresh(client, tokens["refresh_token"]), soft=False)


@pytest.mark.parametrize("config_overrides", [{"refreshable_access_token_lifetime": "1m",
                                               "refresh_token_lifetime": "10m"}])
async def test_refresh_token_lifetime_logs_out_inactive_sessions(timed_hs, client, clock):
    await register(client, "alice", PASSWORD)
    tokens = await login(client)
    assert tokens["expires_in_ms"] == 60_000
    clock.advance(9 * 60_000)
    status, tokens = await refresh(client, tokens["refresh_token"])  # active: the ten minutes start again
    assert status == 200
    clock.advance(10 * 60_000)
    # Inactive too long: the refresh token expired; soft (log in again with the same device).
    assert is_unknown(await refresh(client, tokens["refresh_token"]), soft=True)


@pytest.mark.parametrize("config_overrides", [{"session_lifetime": "30m", "refreshable_access_token_lifetime": "20m"}])
async def test_session_lifetime_bounds_every_refresh(timed_hs, client, clock):
    await register(client, "alice", PASSWORD)
    tokens = await login(client, device_id="LAPTOP")
    assert tokens["expires_in_ms"] == 20 * 60_000
    clock.advance(15 * 60_000)
    status, tokens = await refresh(client, tokens["refresh_token"])
    assert status == 200 and tokens["expires_in_ms"] == 15 * 60_000  # the session ends at 30 minutes
    clock.advance(15 * 60_000)
    assert is_unknown(await whoami(client, tokens["access_token"]), soft=True)
    assert is_unknown(await refresh(client, tokens["refresh_token"]), soft=True)
    # Logging in again on the same device starts a new session.
    again = await login(client, refresh=False, device_id="LAPTOP")
    assert again["expires_in_ms"] == 30 * 60_000 and (await whoami(client, again["access_token"]))[0] == 200


@pytest.mark.parametrize("config_overrides", [{"nonrefreshable_access_token_lifetime": "1h",
                                               "allow_guest_access": True}])
async def test_nonrefreshable_access_token_lifetime(timed_hs, client, clock):
    await register(client, "alice", PASSWORD)
    tokens = await login(client, refresh=None, device_id="OLDCLIENT")
    assert tokens["expires_in_ms"] == 3_600_000 and "refresh_token" not in tokens
    guest = await (await client.post("/_matrix/client/v3/register?kind=guest", json={})).json()
    assert "expires_in_ms" not in guest  # a guest cannot log in again
    clock.advance(3_600_000)
    assert is_unknown(await whoami(client, tokens["access_token"]), soft=True)
    assert (await whoami(client, guest["access_token"]))[0] == 200
    again = await login(client, refresh=None, device_id="OLDCLIENT")
    assert (await whoami(client, again["access_token"]))[1]["device_id"] == "OLDCLIENT"


async def test_refresh_tokens_survive_a_restart(timed_hs, client, tmp_path, clock):
    from gateway.server import HomeServer

    await register(client, "alice", PASSWORD)
    tokens = await login(client)
    other = await HomeServer.open(timed_hs.config)
    other.clock_ms = clock
    try:
        renewed = await other.auth.refresh_tokens.refresh(tokens["refresh_token"])
        assert (await other.auth.get_requester(renewed["access_token"])).user_id == "@alice:hs.test"
    finally:
        await other.close()
