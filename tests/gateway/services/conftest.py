from __future__ import annotations

import pytest

from gateway.config import parse_config
from tests.conftest import GENEROUS_RATE_LIMITS
from gateway.server import HomeServer


@pytest.fixture
async def hs(tmp_path, database_config):
    db = {"name": "sqlite3", "args": {"database": database_config.args["database"]}} \
        if database_config.engine == "sqlite" else {"name": "psycopg2", "args": database_config.args}
    config = parse_config({"server_name": "hs.test", "database": db, **GENEROUS_RATE_LIMITS,
                           "listeners": [{"port": 1, "resources": [{"names": ["client"]}]}]},
                          config_path=str(tmp_path / "homeserver.yaml"))
    server = await HomeServer.open(config)
    yield server
    await server.close()


async def make_user(hs, localpart: str) -> str:
    from gateway.storage.users import UserStore

    user_id = f"@{localpart}:hs.test"
    await UserStore(hs.db).create_user(user_id, password_hash=None, created_ts=0)
    return user_id
