"""A real application service library (mautrix-python's ``mautrix.appservice``) as the
bridge, against our server with an unchanged Synapse-style registration file: its bot and
a puppet join and talk (timestamps massaged), it receives a user's messages and typing,
its exclusive namespaces are refused to others, it is asked about unknown users and
aliases of its namespace, it pings; and when it is down (its HTTP server stopped), every
message sent meanwhile reaches it afterwards, in order, once each, also across a restart
of our server. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import yaml
from mautrix.appservice import AppService
from mautrix.appservice.state_store import FileASStateStore
from mautrix.types import EventType, RoomAlias, RoomCreatePreset, UserID

from tests.conftest import SKIP_POSTGRES, create_postgres_database, drop_postgres_database, free_port
from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA

AS_ID = "mautrix-test"
CONFIG = {"enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
PASSWORD = "correct horse battery"


class Bridge:
    """mautrix's AppService, recording every transaction it is handed (ID, events)."""

    def __init__(self, gw, as_port: int, as_token: str, hs_token: str, state_path: Path):
        self.port = as_port
        self.transactions: list[tuple[str, list[dict]]] = []
        self.messages: asyncio.Queue = asyncio.Queue()
        self.ephemeral: asyncio.Queue = asyncio.Queue()
        self.to_device: asyncio.Queue = asyncio.Queue()
        self.otk_counts: asyncio.Queue = asyncio.Queue()
        self.appserv = AppService(server=gw.client_url, domain=gw.server_name, as_token=as_token,
                                  hs_token=hs_token, bot_localpart="bridgebot", id=AS_ID,
                                  state_store=FileASStateStore(str(state_path), binary=False),
                                  ephemeral_events=True, encryption_events=True, query_user=self.query_user,
                                  query_alias=self.query_alias)
        # What mautrix's encryption support hooks in (MSC2409 to-device, MSC3202 key counts).
        self.appserv.to_device_handler = self.to_device.put
        self.appserv.otk_handler = self.otk_counts.put
        self.appserv.device_list_handler = self._ignore
        original = self.appserv.handle_transaction

        async def recording(txn_id, *, events, **kwargs):
            self.transactions.append((txn_id, [dict(e) for e in events]))
            return await original(txn_id, events=events, **kwargs)

        self.appserv.handle_transaction = recording
        self.appserv.matrix_event_handler(self.on_event)

    @staticmethod
    async def _ignore(_value) -> None:
        return None

    async def on_event(self, event) -> None:
        if event.type == EventType.ROOM_MESSAGE:
            await self.messages.put(event)
        elif event.type in (EventType.TYPING, EventType.RECEIPT):
            await self.ephemeral.put(event)

    async def query_user(self, user_id):
        # A bridge creates the puppet it is asked about, then says yes.
        await self.appserv.intent.user(user_id).ensure_registered()
        return {"created": True}  # mautrix answers 404 for an empty one

    async def query_alias(self, alias):
        if not alias.startswith("#_mx_lobby"):
            return None
        await self.appserv.intent.create_room(alias_localpart=alias[1:].split(":")[0], name="Lobby",
                                              preset=RoomCreatePreset.PUBLIC)
        return {"created": True}

    async def start(self) -> None:
        await self.appserv.start(host="127.0.0.1", port=self.port)

    async def stop(self) -> None:
        await self.appserv.stop()

    async def next_message(self, timeout: float = 30):
        return await asyncio.wait_for(self.messages.get(), timeout)


async def _client(base: str, method: str, path: str, token: str | None = None, body=None, query=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, base + path, json=body, headers=headers, params=query) as resp:
            return resp.status, await resp.json(content_type=None)


async def _register(base: str, name: str) -> dict:
    status, body = await _client(base, "POST", "/_matrix/client/v3/register", body={
        "username": name, "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
    assert status == 200, body
    return body


async def _pending_txns(db_config: dict) -> list[tuple[int, list[str]]]:
    """The transactions our server stored for the bridge and not yet got acknowledged."""
    if db_config["name"] == "sqlite3":
        import sqlite3

        with sqlite3.connect(db_config["args"]["database"]) as conn:
            rows = conn.execute("SELECT txn_id, event_ids FROM appservice_txns WHERE as_id = ?", (AS_ID,)).fetchall()
    else:
        args = db_config["args"]
        conn = await asyncpg.connect(user=args["user"], database=args["database"], host=args["host"],
                                     port=args["port"])
        try:
            rows = await conn.fetch("SELECT txn_id, event_ids FROM appservice_txns WHERE as_id = $1", AS_ID)
        finally:
            await conn.close()
    return [(int(r[0]), json.loads(r[1])) for r in rows]


async def _until(predicate, timeout: float = 30):
    """Wait (polling the database) until ``predicate()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request, tmp_path):
    if request.param == "sqlite":
        yield {"name": "sqlite3", "args": {"database": str(tmp_path / "gw" / "gateway.db")}}
        return
    if SKIP_POSTGRES:
        pytest.skip("no PostgreSQL")
    name, args = await create_postgres_database()
    try:
        yield {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 4}}
    finally:
        await drop_postgres_database(name)


async def test_mautrix_bridge(tmp_path, database):
    ca = TestCA(tmp_path / "ca")
    (tmp_path / "gw").mkdir()
    as_port = free_port()
    as_token, hs_token = secrets.token_hex(32), secrets.token_hex(32)
    registration = tmp_path / "mautrix-registration.yaml"
    # What mautrix bridges generate (and what a Synapse operator already has).
    registration.write_text(yaml.safe_dump({
        "id": AS_ID, "url": f"http://127.0.0.1:{as_port}", "as_token": as_token, "hs_token": hs_token,
        "sender_localpart": "bridgebot", "rate_limited": False,
        "namespaces": {"users": [{"regex": "@_mx_.*", "exclusive": True}, {"regex": "@bridgebot:.*", "exclusive": True}],
                       "aliases": [{"regex": "#_mx_.*", "exclusive": True}]},
        "de.sorunome.msc2409.push_ephemeral": True, "receive_ephemeral": True, "org.matrix.msc3202": True,
    }))
    ports = (free_port(), free_port())
    extra = {**CONFIG, "app_service_config_files": [str(registration)], "database": database,
             # What mautrix's docs ask of a Synapse for encrypted bridges.
             "experimental_features": {"msc2409_to_device_messages_enabled": True,
                                       "msc3202_transaction_extensions": True, "msc3202_device_masquerading": True}}

    async with running_gateway(tmp_path / "gw", ca, extra, ports=ports) as gw:
        base = gw.client_url
        bridge = Bridge(gw, as_port, as_token, hs_token, tmp_path / "mx-state.json")
        await bridge.start()
        try:
            alice = await _register(base, "alice")
            bot = bridge.appserv.intent
            assert (await bot.whoami()).user_id == f"@bridgebot:{gw.server_name}"
            assert await bridge.appserv.ping_self("hello") >= 0

            # The bot and a puppet join alice's room and talk.
            status, created = await _client(base, "POST", "/_matrix/client/v3/createRoom", alice["access_token"],
                                            {"preset": "public_chat", "name": "Bridged"})
            room_id = created["room_id"]
            await bot.join_room(room_id)
            puppet = bot.user(UserID(f"@_mx_bob:{gw.server_name}"))
            await puppet.ensure_registered()
            await puppet.join_room(room_id)
            sent_at = 1_600_000_000_000
            puppet.api.as_user_id = puppet.mxid
            resp = await puppet.api.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                                            {"msgtype": "m.text", "body": "from the other network"},
                                            query_params={"ts": str(sent_at)})
            status, event = await _client(base, "GET", f"/_matrix/client/v3/rooms/{room_id}/event/{resp['event_id']}",
                                          alice["access_token"])
            assert (event["sender"], event["origin_server_ts"]) == (puppet.mxid, sent_at)
            await bot.send_text(room_id, "bot here")

            # The bridge receives what happens in the room: its own users' messages and alice's.
            got = await bridge.next_message()
            assert (got.sender, got.content.body) == (puppet.mxid, "from the other network")
            got = await bridge.next_message()
            assert (got.sender, got.content.body) == (bot.mxid, "bot here")
            await _client(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/a1",
                          alice["access_token"], {"msgtype": "m.text", "body": "hello bridge"})
            got = await bridge.next_message()
            assert (got.sender, got.content.body, got.room_id) == (alice["user_id"], "hello bridge", room_id)
            # Ephemeral events (receive_ephemeral): alice typing, with the room named.
            await _client(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/typing/{alice['user_id']}",
                          alice["access_token"], {"typing": True, "timeout": 10000})
            typing = await asyncio.wait_for(bridge.ephemeral.get(), 30)
            assert typing.type == EventType.TYPING and typing.room_id == room_id
            assert alice["user_id"] in typing.content.user_ids

            # Encrypted bridges: the puppet's device (made with the as_token) gets a to-device
            # message and its one-time key count, parsed by mautrix's own types.
            as_puppet = {"user_id": puppet.mxid}
            status, body = await _client(base, "POST", "/_matrix/client/v3/login", as_token, {
                "type": "m.login.application_service", "device_id": "PUPPETDEV",
                "identifier": {"type": "m.id.user", "user": puppet.mxid}})
            assert status == 200, body
            status, body = await _client(base, "POST", "/_matrix/client/v3/keys/upload", as_token, {
                "one_time_keys": {f"signed_curve25519:K{i}": {"key": f"k{i}", "signatures": {}} for i in range(3)}},
                query={**as_puppet, "device_id": "PUPPETDEV"})
            assert (status, body["one_time_key_counts"]["signed_curve25519"]) == (200, 3)
            status, body = await _client(base, "POST", "/_matrix/client/v3/keys/claim", alice["access_token"], {
                "one_time_keys": {puppet.mxid: {"PUPPETDEV": "signed_curve25519"}}})
            assert status == 200 and body["one_time_keys"][puppet.mxid]["PUPPETDEV"]
            await _client(base, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/k1", alice["access_token"],
                          {"messages": {puppet.mxid: {"PUPPETDEV": {"action": "request_cancellation",
                                                                    "request_id": "r1",
                                                                    "requesting_device_id": "ALICEDEV"}}}})
            to_device = await asyncio.wait_for(bridge.to_device.get(), 30)
            assert (to_device.sender, to_device.to_user_id, to_device.to_device_id) == (
                alice["user_id"], puppet.mxid, "PUPPETDEV")
            assert to_device.type == EventType.ROOM_KEY_REQUEST
            counts = await asyncio.wait_for(bridge.otk_counts.get(), 30)
            assert counts[puppet.mxid]["PUPPETDEV"].signed_curve25519 == 2

            # Exclusive namespaces are refused to everyone else.
            status, body = await _client(base, "POST", "/_matrix/client/v3/register", body={
                "username": "_mx_carol", "password": PASSWORD, "auth": {"type": "m.login.dummy"}})
            assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
            status, body = await _client(base, "PUT", f"/_matrix/client/v3/directory/room/%23_mx_room:{gw.server_name}",
                                         alice["access_token"], {"room_id": room_id})
            assert (status, body["errcode"]) == (400, "M_EXCLUSIVE")
            await bot.add_room_alias(room_id, "_mx_room")
            status, body = await _client(base, "GET", f"/_matrix/client/v3/directory/room/%23_mx_room:{gw.server_name}")
            assert (status, body["room_id"]) == (200, room_id)

            # Unknown users and aliases of its namespace: the bridge is asked and makes them.
            newcomer = f"@_mx_dave:{gw.server_name}"
            status, body = await _client(base, "POST", f"/_matrix/client/v3/rooms/{room_id}/invite",
                                         alice["access_token"], {"user_id": newcomer})
            assert status == 200, body
            status, body = await _client(base, "POST", f"/_matrix/client/v3/join/%23_mx_lobby:{gw.server_name}",
                                         alice["access_token"], {})
            assert status == 200, body
            lobby = await bot.resolve_room_alias(RoomAlias(f"#_mx_lobby:{gw.server_name}"))
            assert lobby.room_id == body["room_id"]

            # Down: its HTTP server stops; alice keeps talking; our server keeps the
            # transaction it could not deliver.
            await bridge.stop()
            while not bridge.messages.empty():
                bridge.messages.get_nowait()
            sent = []
            for i in range(3):
                status, body = await _client(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/d{i}",
                                             alice["access_token"], {"msgtype": "m.text", "body": f"while down {i}"})
                sent.append(body["event_id"])
            pending = await _until(lambda: _pending_txns(database))
        finally:
            await bridge.stop()
    # Our server restarts while the bridge is still down; the undelivered transaction is kept.
    [(stored_txn_id, stored_events)] = pending
    async with running_gateway(tmp_path / "gw", ca, extra, ports=ports) as gw:
        base = gw.client_url
        for i in range(3, 5):
            status, body = await _client(base, "PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/d{i}",
                                         alice["access_token"], {"msgtype": "m.text", "body": f"while down {i}"})
            sent.append(body["event_id"])
        assert [t for t, _ in await _pending_txns(database)] == [stored_txn_id]
        bridge = Bridge(gw, as_port, as_token, hs_token, tmp_path / "mx-state.json")
        bridge.transactions = []
        await bridge.start()
        try:
            await bridge.appserv.ping_self()  # bridges ping when they start: delivery resumes at once
            got = [await bridge.next_message() for _ in range(5)]
            assert [m.content.body for m in got] == [f"while down {i}" for i in range(5)]
            assert [m.event_id for m in got] == sent
            # The first transaction it got is the one stored before the restart, unchanged.
            first_id, first_events = bridge.transactions[0]
            assert int(first_id) == stored_txn_id
            assert [e["event_id"] for e in first_events] == stored_events
            # Each event in one transaction only, and transaction IDs keep growing.
            delivered = [e["event_id"] for _, events in bridge.transactions for e in events]
            assert len(delivered) == len(set(delivered))
            ids = [int(t) for t, _ in bridge.transactions]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            await _until(lambda: _nothing_pending(database))
        finally:
            await bridge.stop()


async def _nothing_pending(database) -> bool:
    return await _pending_txns(database) == []
