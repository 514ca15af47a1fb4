"""``gateway import-synapse`` on the database of a real Synapse from PyPI (on SQLite, its
default, and on PostgreSQL) after a scripted run: users (one with a password under a
pepper, one linked to an SSO provider with a 3PID), devices, tokens, profiles, rooms,
messages, an edit, media, an encrypted room with a key backup, account data, push rules,
tags (tests/support/scripted_history.py). Synapse is stopped, its data imported, and our
server, started with the same server name and signing key, serves it all."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import yaml

from gateway.config import DatabaseConfig
from gateway.porting.synapse_source import read_synapse_config
from gateway.storage import open_database
from gateway.storage.sso import SsoStore
from tests.conftest import POSTGRES_DSN, SKIP_POSTGRES, drop_postgres_database, free_port
from tests.support.gateway_server import running_gateway
from tests.support.scripted_history import Account, History, check_history, make_history
from tests.support.synapse import SynapseServer, register_synapse_user
from tests.support.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[3]
PEPPER = "a pinch of pepper"
#: What the import brings over so far (tests/support/scripted_history.py's parts).
IMPORTED = frozenset({"accounts", "rooms", "media", "keys", "to_device", "account_data"})


@dataclass
class Deployment:
    """A stopped Synapse after the scripted run, and what it left."""

    dir: Path
    ca: TestCA
    synapse: SynapseServer
    history: History
    carol: str
    engine: str
    refresh_token: str
    puppet_token: str

    @property
    def synapse_config(self) -> Path:
        return self.synapse.dir / "homeserver.yaml"

    def our_config(self, directory: Path, **overrides) -> dict:
        return {
            "server_name": self.synapse.server_name,
            "database": {"name": "sqlite3", "args": {"database": str(directory / "gateway.db")}},
            "signing_key_path": str(self.synapse.dir / "signing.key"),
            "media_store_path": str(directory / "media"),
            "password_config": {"pepper": PEPPER},
            "bcrypt_rounds": 4,
            **overrides,
        }


async def _create_synapse_postgres() -> tuple[str, dict]:
    """Synapse wants a C-collated UTF8 database."""
    name = f"synapse_test_{os.urandom(6).hex()}"
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' "
                           "TEMPLATE template0")
    finally:
        await conn.close()
    params = conn._params
    args = {"user": params.user, "database": name, "host": conn._addr[0], "port": conn._addr[1],
            "cp_min": 1, "cp_max": 5}
    if params.password:
        args["password"] = params.password
    return name, args


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def deployment(request, tmp_path_factory):
    if request.param == "postgres" and SKIP_POSTGRES:
        pytest.skip("GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable (the test command said so)")
    directory = tmp_path_factory.mktemp(f"synapse-{request.param}")
    ca = TestCA(directory / "ca")
    synapse = SynapseServer(directory / "synapse", ca)
    extra = {"password_config": {"pepper": PEPPER}, "room_list_publication_rules": [{"action": "allow"}]}
    pg_name = None
    if request.param == "postgres":
        pg_name, args = await _create_synapse_postgres()
        extra["database"] = {"name": "psycopg2", "args": args}
    await synapse.start(extra)
    try:
        s = synapse.server_name
        admin = await register_synapse_user(synapse, "admin", "admin-pass", admin=True)
        await register_synapse_user(synapse, "alice", "alice-pass")
        await register_synapse_user(synapse, "bob", "bob-pass")
        carol = f"@carol:{s}"
        async with aiohttp.ClientSession() as session:
            for user_id, body in (
                    (carol, {"external_ids": [{"auth_provider": "oidc-test", "external_id": "carol-sub"}],
                             "displayname": "Carol"}),
                    (f"@alice:{s}", {"threepids": [{"medium": "email", "address": "alice@example.org"}]})):
                async with session.put(f"{synapse.client_url}/_synapse/admin/v2/users/{user_id}", json=body,
                                       headers={"Authorization": f"Bearer {admin}"}) as r:
                    assert r.status in (200, 201), await r.text()
            # A client that asked for a refresh token (Synapse issues one with a short-lived access token).
            async with session.post(f"{synapse.client_url}/_matrix/client/v3/login", json={
                    "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
                    "password": "bob-pass", "refresh_token": True, "device_id": "REFRESHING"}) as r:
                refreshing = await r.json()
                assert "refresh_token" in refreshing, refreshing
        history = await make_history(synapse.client_url, Account(f"@alice:{s}", "alice-pass"),
                                     Account(f"@bob:{s}", "bob-pass"), directory / "nio")
        # Moderation: a locked account, a shadow-banned one, an admin's "login as" token, protected media.
        await register_synapse_user(synapse, "eve", "eve-pass")
        await register_synapse_user(synapse, "mallory", "mallory-pass")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {admin}"}) as session:
            admin_api = f"{synapse.client_url}/_synapse/admin"
            for method, path, body in (
                    ("PUT", f"/v2/users/@eve:{s}", {"locked": True}),
                    ("POST", f"/v1/users/@mallory:{s}/shadow_ban", {}),
                    ("POST", f"/v1/media/protect/{history.media_mxc.rsplit('/', 1)[1]}", {}),
                    ("POST", f"/v1/users/@bob:{s}/login", {})):
                async with session.request(method, admin_api + path, json=body) as r:
                    assert r.status == 200, (path, await r.text())
                    answer = await r.json()
            puppet_token = answer["access_token"]
    finally:
        await synapse.stop()
    try:
        yield Deployment(directory, ca, synapse, history, carol, request.param, refreshing["refresh_token"],
                         puppet_token)
    finally:
        if pg_name:
            await drop_postgres_database(pg_name)


async def _import(synapse_config: Path, config: dict, directory: Path) -> tuple[int, str, str]:
    path = directory / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "import-synapse", "--synapse-config", str(synapse_config),
        "--config-path", str(path), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def _table_counts(config: dict) -> dict[str, int]:
    db = await open_database(DatabaseConfig("sqlite", config["database"]["args"]))
    try:
        tables = [r[0] for r in await db.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {t: await db.fetchval(f'SELECT COUNT(*) FROM "{t}"') for t in tables}
    finally:
        await db.close()


async def test_import_then_our_server_serves_the_same_data(deployment, tmp_path):
    config = deployment.our_config(tmp_path)
    # A bridge's transaction Synapse made; on PostgreSQL its ID sequence went further.
    synapse_db = await open_database(read_synapse_config(str(deployment.synapse_config)).database)
    try:
        await synapse_db.execute("INSERT INTO application_services_txns (as_id, txn_id, event_ids)"
                                 " VALUES ('bridge', 41, '[]') ON CONFLICT DO NOTHING")
        if deployment.engine == "postgres":
            await synapse_db.execute("SELECT setval('application_services_txn_id_seq', 57)")
    finally:
        await synapse_db.close()
    rc, out, err = await _import(deployment.synapse_config, config, tmp_path)
    assert rc == 0, err
    assert "schema version 94, compat version 84" in out and "accounts:" in out, out
    first = await _table_counts(config)
    # Application services start at the end of the import, after Synapse's transaction IDs.
    db = await open_database(DatabaseConfig("sqlite", config["database"]["args"]))
    try:
        state = await db.fetchrow("SELECT events_position, last_txn_id FROM appservice_state WHERE as_id = 'bridge'")
        assert tuple(state) == (await db.fetchval("SELECT position FROM stream_positions WHERE stream_name = 'events'"),
                                57 if deployment.engine == "postgres" else 41)
    finally:
        await db.close()
    # A second run adds nothing.
    rc, _, err = await _import(deployment.synapse_config, config, tmp_path)
    assert rc == 0, err
    assert await _table_counts(config) == first

    h = deployment.history
    async with running_gateway(tmp_path, deployment.ca, config,
                               ports=(deployment.synapse.fed_port, free_port())) as gw, aiohttp.ClientSession() as s:
        assert gw.server_name == deployment.synapse.server_name
        for account in (h.alice, h.bob):  # the same tokens and devices
            async with s.get(f"{gw.client_url}/_matrix/client/v3/account/whoami",
                             headers={"Authorization": f"Bearer {account.access_token}"}) as r:
                assert await r.json() == {"user_id": account.user_id, "device_id": account.device_id,
                                          "is_guest": False}
        # A client with a refresh token refreshes it here.
        async with s.post(f"{gw.client_url}/_matrix/client/v3/refresh",
                          json={"refresh_token": deployment.refresh_token}) as r:
            refreshed = await r.json()
            assert r.status == 200 and refreshed["refresh_token"] != deployment.refresh_token, refreshed
        async with s.get(f"{gw.client_url}/_matrix/client/v3/account/whoami",
                         headers={"Authorization": f"Bearer {refreshed['access_token']}"}) as r:
            assert (await r.json())["device_id"] == "REFRESHING"
        # The admin's "login as bob" token acts as bob; a locked account stays locked.
        async with s.get(f"{gw.client_url}/_matrix/client/v3/account/whoami",
                         headers={"Authorization": f"Bearer {deployment.puppet_token}"}) as r:
            assert (await r.json())["user_id"] == h.bob.user_id
        async with s.post(f"{gw.client_url}/_matrix/client/v3/login", json={
                "type": "m.login.password", "password": "eve-pass",
                "identifier": {"type": "m.id.user", "user": "eve"}}) as r:
            assert r.status == 401 and (await r.json())["errcode"] == "M_USER_LOCKED", await r.text()
        # The password, under Synapse's pepper.
        async with s.post(f"{gw.client_url}/_matrix/client/v3/login", json={
                "type": "m.login.password", "password": "alice-pass",
                "identifier": {"type": "m.id.user", "user": "alice"}}) as r:
            assert r.status == 200, await r.text()
        async with s.get(f"{gw.client_url}/_matrix/client/v3/profile/{deployment.carol}") as r:
            assert (await r.json())["displayname"] == "Carol"
        await check_history(gw.client_url, h, IMPORTED)
        # The federation signing key is Synapse's.
        ctx = ssl.create_default_context(cafile=str(deployment.ca.ca_path))
        async with s.get(f"{gw.federation_url}/_matrix/key/v2/server", ssl=ctx) as r:
            keys = await r.json()
        synapse_key = (deployment.synapse.dir / "signing.key").read_text().split()
        assert keys["server_name"] == deployment.synapse.server_name
        assert list(keys["verify_keys"]) == [f"ed25519:{synapse_key[1]}"]

    db = await open_database(DatabaseConfig("sqlite", config["database"]["args"]))
    try:
        assert await SsoStore(db).get_external_ids(deployment.carol) == [("oidc-test", "carol-sub")]
        assert [tuple(r) for r in await db.fetch("SELECT user_id, medium, address FROM user_threepids")] == [
            (h.alice.user_id, "email", "alice@example.org")]
        server = deployment.synapse.server_name
        assert [tuple(r) for r in await db.fetch(
            "SELECT user_id, locked, shadow_banned FROM users WHERE locked OR shadow_banned ORDER BY user_id")] == [
            (f"@eve:{server}", True, False), (f"@mallory:{server}", False, True)]
        assert await db.fetchval("SELECT safe_from_quarantine FROM local_media") == 1
    finally:
        await db.close()


async def test_import_refuses_another_deployment_or_schema(deployment, tmp_path):
    other_key = tmp_path / "other.key"
    other_key.write_text("ed25519 a_other nJBexTTmJ4w2V9zwD5NGU7Uj2tlpt5ufMdT/wiY8NUk\n")
    cases = [
        ({"server_name": "other.example"}, "server_name differs"),
        ({"signing_key_path": str(other_key)}, "does not hold Synapse's signing key"),
        ({"password_config": {"pepper": "salt"}}, "pepper differs"),
    ]
    for overrides, message in cases:
        rc, _, err = await _import(deployment.synapse_config, deployment.our_config(tmp_path, **overrides), tmp_path)
        assert rc == 1 and message in err, (overrides, err)
    assert not (tmp_path / "gateway.db").exists()  # refused before our database was touched

    synapse_db = await open_database(read_synapse_config(str(deployment.synapse_config)).database)
    try:
        await synapse_db.execute("UPDATE schema_version SET version = 83")
        rc, _, err = await _import(deployment.synapse_config, deployment.our_config(tmp_path), tmp_path)
        assert rc == 1 and "schema is version 83 (compat version 84)" in err and "Synapse 1.100 to 1.163" in err, err
        assert "upgrade Synapse to 1.100 or later" in err
        await synapse_db.execute("UPDATE schema_version SET version = 95")
        rc, _, err = await _import(deployment.synapse_config, deployment.our_config(tmp_path), tmp_path)
        assert rc == 1 and "schema is version 95" in err and "written by a newer Synapse" in err, err
    finally:
        await synapse_db.execute("UPDATE schema_version SET version = 94")
        await synapse_db.close()
    assert not (tmp_path / "gateway.db").exists()
