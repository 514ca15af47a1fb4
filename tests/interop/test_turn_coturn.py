"""TURN credentials from ``GET /voip/turnServer`` accepted by a real coturn on loopback
(tests/support/coturn.py): a relay is allocated and data goes through it. Forged,
expired, or another server's credentials are refused."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from tests.gateway.client_api.conftest import BASE_CONFIG, auth_header, register
from tests.support.coturn import allocate, running_coturn

SECRET = "coturn-shared-secret"
pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared coturn


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coturn(tmp_path_factory):
    async with running_coturn(tmp_path_factory.mktemp("coturn"), shared_secret=SECRET) as server:
        yield server


async def gateway_client(tmp_path, turn: dict):
    config = parse_config({**BASE_CONFIG, "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "db")}},
                           **turn}, config_path=str(tmp_path / "homeserver.yaml"))
    hs = await HomeServer.open(config)
    return hs, TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0])))


async def credentials(client) -> dict:
    alice = await register(client, "alice")
    resp = await client.get("/_matrix/client/v3/voip/turnServer", headers=auth_header(alice["access_token"]))
    assert resp.status == 200
    return await resp.json()


async def test_coturn_accepts_the_shared_secret_credentials_we_hand_out(coturn, tmp_path):
    hs, client = await gateway_client(tmp_path, {"turn_uris": [coturn.uri], "turn_shared_secret": SECRET})
    try:
        async with client:
            creds = await credentials(client)
            assert urlsplit(creds["uris"][0]).path == f"127.0.0.1:{coturn.port}"
            ok, output = await allocate(coturn, creds["username"], creds["password"])
            assert ok, output
            # A forged password, or the same user with a later expiry than we signed: refused.
            ok, _ = await allocate(coturn, creds["username"], creds["password"][:-4] + "AAA=")
            assert not ok
            expiry, _, user = creds["username"].partition(":")
            ok, _ = await allocate(coturn, f"{int(expiry) + 1}:{user}", creds["password"])
            assert not ok
            # Credentials of the past (made two hours ago, valid one hour): coturn checks the expiry.
            real_clock = hs.clock_ms
            hs.clock_ms = lambda: real_clock() - 2 * 3_600_000
            resp = await client.get("/_matrix/client/v3/voip/turnServer", headers=auth_header(await _login(client)))
            old = await resp.json()
            ok, _ = await allocate(coturn, old["username"], old["password"])
            assert not ok
    finally:
        await hs.close()


async def _login(client) -> str:
    resp = await client.post("/_matrix/client/v3/login", json={
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw-" + "x" * 8})
    return (await resp.json())["access_token"]


async def test_another_secret_is_refused(coturn, tmp_path):
    hs, client = await gateway_client(tmp_path, {"turn_uris": [coturn.uri], "turn_shared_secret": "not-the-secret"})
    try:
        async with client:
            creds = await credentials(client)
            ok, _ = await allocate(coturn, creds["username"], creds["password"])
            assert not ok
    finally:
        await hs.close()


async def test_coturn_accepts_a_static_username_and_password(tmp_path):
    async with running_coturn(tmp_path / "coturn", users={"calls": "call-password"}) as static:
        hs, client = await gateway_client(tmp_path, {"turn_uris": [static.uri], "turn_username": "calls",
                                                     "turn_password": "call-password"})
        try:
            async with client:
                creds = await credentials(client)
                assert creds["username"] == "calls" and creds["ttl"] == 3600
                ok, output = await allocate(static, creds["username"], creds["password"])
                assert ok, output
                assert not (await allocate(static, "calls", "wrong"))[0]
        finally:
            await hs.close()
