"""Two of our servers over TLS on loopback: A's federation sender delivers to B's inbound
/send (B checks every signature, fetching A's keys, and runs every PDU through its
receipt pipeline). B joins A's room the way a send_join leaves it (the join stored on A,
A's state stored on B as outliers plus the join with that state: scripted, as federated
joins are not built yet). Then: live delivery in order; typing and a read receipt as
EDUs reaching B's typing and receipts; B down for a short while and A
restarted meanwhile -> B gets every event, in order; B down for long -> B gets A's
newest event by catch-up and fills the gap before it itself with get_missing_events
(bounded, as in Synapse), and both have A's newest event as a head of the room."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web

from federation.events import compute_event_id
from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.server import HomeServer
from gateway.services.events import EventSpec
from gateway.storage.users import UserStore
from tests.conftest import free_port
from tests.support.federation_peer import remote_join
from tests.support.tls import TestCA, serve_tls


class Node:
    """One of our servers in-process: a fixed port (so a restart keeps its name), a TLS
    listener that can be stopped and started, the sender running."""

    def __init__(self, directory: Path, ca: TestCA):
        self.directory, self.ca = directory, ca
        self.port = free_port()
        self.server_name = f"127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        self.config = parse_config({
            "server_name": self.server_name,
            "database": {"name": "sqlite3", "args": {"database": str(directory / "hs.db")}},
            "signing_key_path": str(directory / "signing.key"),
            "listeners": [{"port": self.port, "resources": [{"names": ["client", "federation"]}]}],
            "federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
            "federation": {"destination_min_retry_interval": 50, "destination_max_retry_interval": 400},
        }, config_path=str(directory / "homeserver.yaml"))
        self.hs: HomeServer | None = None
        self.runner: web.AppRunner | None = None

    async def open(self) -> "Node":
        self.hs = await HomeServer.open(self.config)
        await self.listen()
        await self.hs.federation_sender.start()
        return self

    async def listen(self) -> None:
        self.runner, _ = await serve_tls(build_listener_app(self.hs, self.config.listeners[0]), self.ca,
                                         "127.0.0.1", port=self.port)

    async def unlisten(self) -> None:
        await self.runner.cleanup()
        self.runner = None

    async def close(self) -> None:
        if self.runner is not None:
            await self.unlisten()
        await self.hs.close()


async def until(check, timeout: float = 30.0):
    async def loop():
        while not (result := await check()):
            await asyncio.sleep(0.02)
        return result

    return await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def nodes(tmp_path):
    ca = TestCA(tmp_path / "ca")
    a, b = Node(tmp_path / "a", ca), Node(tmp_path / "b", ca)
    await a.open()
    await b.open()
    yield a, b
    for n in (a, b):
        if n.hs is not None:
            await n.close()


async def timeline_bodies(hs, room_id) -> list[str]:
    events = await hs.events.store.get_room_events(room_id, from_pos=None, backwards=False, limit=10_000)
    return [e.pdu.content.get("body") for e in events if e.pdu.type == "m.room.message"]


async def say(hs, room_id, sender, bodies):
    out = []
    for body in bodies:
        sent = await hs.events.send_event(room_id, EventSpec("m.room.message", sender, {"msgtype": "m.text",
                                                                                         "body": body}))
        out.append(sent.pdu.event_id)
    return out


async def join_b_to_a_room(a: Node, b: Node) -> tuple[str, str, str]:
    alice = f"@alice:{a.server_name}"
    await UserStore(a.hs.db).create_user(alice, password_hash=None, created_ts=0)
    room_id = await a.hs.rooms.create_room(alice, {"room_version": "12", "preset": "public_chat"})
    bob = f"@bob:{b.server_name}"
    state_before = await a.hs.events.state.get_current_state_ids(room_id)
    join = await remote_join(a.hs, room_id, bob, SimpleNamespace(server_name=b.server_name, key=b.hs.signing_key))
    # B's side of the join: A's state (with its auth chain: here the same events) as
    # outliers, then the join with that state.
    rv = join.room_version
    state_pdus = await a.hs.events.get_pdus(state_before.values())
    assert await b.hs.events.store.ensure_room(room_id, rv, creator=alice, created_ts=0)
    result = await b.hs.federation_events.persist_outliers(
        a.server_name, room_id, rv, [p.get_pdu_json() for p in state_pdus.values()])
    assert set(result.accepted) == set(state_before.values()), result
    outcome = await b.hs.federation_events.persist_event_with_state(a.server_name, room_id, join.get_pdu_json(),
                                                                    state_before)
    assert outcome.error is None and outcome.rejected is None
    return room_id, alice, bob


async def test_transactions_between_two_gateways_survive_outages_and_a_restart(nodes):
    a, b = nodes
    room_id, alice, _ = await join_b_to_a_room(a, b)

    live = await say(a.hs, room_id, alice, [f"live {i}" for i in range(5)])

    async def b_has(body):
        return body in await timeline_bodies(b.hs, room_id)

    await until(lambda: b_has("live 4"))
    assert await timeline_bodies(b.hs, room_id) == [f"live {i}" for i in range(5)]

    # EDUs: alice's typing and read receipt reach B's typing and receipts.
    await a.hs.typing.set_typing(alice, room_id, True, 30_000)
    await a.hs.receipts.send_receipt(alice, room_id, "m.read", live[-1], None)

    async def b_sees_edus():
        receipt = await b.hs.receipts.store.get_user_receipt(room_id, alice, ["m.read"])
        return alice in b.hs.typing.get_typing(room_id) and receipt is not None and receipt.event_id == live[-1]

    await until(b_sees_edus)

    # Short outage of B, and A restarts meanwhile: B gets every event, in order.
    await b.unlisten()
    await say(a.hs, room_id, alice, [f"short {i}" for i in range(8)])

    async def a_backing_off():
        row = await a.hs.federation_sender.store.get_destination(b.server_name)
        return row is not None and row.retry_interval > 0

    await until(a_backing_off)
    await a.close()
    await a.open()
    await say(a.hs, room_id, alice, ["after restart"])
    await b.listen()
    await until(lambda: b_has("after restart"))
    assert await timeline_bodies(b.hs, room_id) == (
        [f"live {i}" for i in range(5)] + [f"short {i}" for i in range(8)] + ["after restart"])

    # Long outage: more than one transaction's worth. Catch-up sends the newest event;
    # B asks A for the ones before it (get_missing_events, at most 10) itself.
    await b.unlisten()
    long = await say(a.hs, room_id, alice, [f"long {i}" for i in range(60)])
    await until(a_backing_off)
    await b.listen()
    await until(lambda: b_has("long 59"))
    got = await timeline_bodies(b.hs, room_id)
    assert got[-11:] == [f"long {i}" for i in range(49, 60)]  # the newest, and 10 fetched by B
    assert "long 0" not in got  # not replayed: a gap B can backfill
    # B's head: A's newest event (and, until B backfills the gap, its last event before it).
    assert long[-1] in await b.hs.events.store.get_forward_extremities(room_id)
    assert await a.hs.events.store.get_forward_extremities(room_id) == [long[-1]]
    assert compute_event_id((await b.hs.events.store.get_event(long[-1])).pdu.get_pdu_json(),
                            (await b.hs.events.store.get_room(room_id)).room_version) == long[-1]
    # A's bookkeeping: B has everything up to A's newest event.
    row = await until(lambda: _caught_up(a, b, room_id))
    assert row.retry_interval == 0 and row.failure_ts is None


async def _caught_up(a: Node, b: Node, room_id: str):
    row = await a.hs.federation_sender.store.get_destination(b.server_name)
    head = (await a.hs.events.store.get_room(room_id)).head_stream_ordering
    return row if row.last_successful_stream_ordering == head else None
