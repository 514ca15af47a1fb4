from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from gateway.services.account_moderation import ShadowBanDelay
from tests.conftest import GENEROUS_RATE_LIMITS

BASE_CONFIG = {
    "server_name": "hs.test",
    "enable_registration": True,
    "bcrypt_rounds": 4,
    "enable_registration_without_verification": True,
    "registration_shared_secret": "shared-secret",
    "listeners": [{"port": 1, "resources": [{"names": ["client", "federation"]}]}],
    # Generous limits: tests that check rate limiting set their own.
    **GENEROUS_RATE_LIMITS,
}


async def no_wait(seconds: float) -> None:
    """A sleep that returns at once."""


@pytest.fixture
def config_overrides() -> dict:
    return {}


@pytest.fixture
async def hs(tmp_path, database_config, config_overrides):
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}
    config = parse_config({**BASE_CONFIG, "database": db, **config_overrides},
                          config_path=str(tmp_path / "homeserver.yaml"))
    server = await HomeServer.open(config)
    server.shadow_ban_delay = ShadowBanDelay(sleep=no_wait)  # tests do not wait 1-10 s
    yield server
    await server.close()


@pytest.fixture
async def client(hs):
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as c:
        yield c


async def register(client, username: str, password: str = "pw-" + "x" * 8) -> dict:
    resp = await client.post("/_matrix/client/v3/register", json={
        "username": username, "password": password, "auth": {"type": "m.login.dummy"},
    })
    body = await resp.json()
    assert resp.status == 200, body
    return body


def auth_header(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
