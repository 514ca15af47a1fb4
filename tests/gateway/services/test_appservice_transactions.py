"""Transactions to application services: which events a service gets, retries with the
same ID and events until acknowledged, ephemeral data, to-device messages and MSC3202's
device lists and key counts (both engines). The restart and outage story with a real
bridge library is in tests/interop/test_mautrix_appservice.py."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from gateway.config.appservice import parse_registration
from gateway.services import appservice_transactions
from gateway.services.appservice_transactions import events_of_interest
from gateway.storage.destinations import MemberDelta, NewEventRow
from tests.gateway.client_api.conftest import auth_header, client, hs, register  # noqa: F401 (fixtures)
from tests.support.fake_appservice import fake_appservice

AS_TOKEN, HS_TOKEN = "as-token", "hs-token"
AS = auth_header(AS_TOKEN)


# --- interest, on plain data ---------------------------------------------------------------

RAW_SERVICE = {
    "id": "b", "url": None, "as_token": "a", "hs_token": "h", "sender_localpart": "bot",
    "namespaces": {"users": [{"exclusive": True, "regex": "@_b_.*"}], "rooms": [{"exclusive": False, "regex": "!bridged.*"}],
                   "aliases": [{"exclusive": True, "regex": "#_b_.*"}]}}
SERVICE, _ = parse_registration(RAW_SERVICE, "hs.test")


def ev(pos: int, room: str = "!r:hs.test", sender: str = "@alice:hs.test", type_: str = "m.room.message",
       state_key: str | None = None) -> NewEventRow:
    return NewEventRow(f"$e{pos}", room, type_, state_key, sender, pos)


def chosen(events, **kw) -> list[int]:
    args = {"joined_now": {}, "deltas": [], "was_join": {}, "aliases": {}, **kw}
    return [e.stream_ordering for e in events_of_interest(SERVICE, events, **args)]


def test_interest_by_sender_target_room_and_alias():
    assert chosen([ev(1)]) == []
    assert chosen([ev(1, sender="@_b_x:hs.test")]) == [1]
    assert chosen([ev(1, sender="@bot:hs.test")]) == [1]
    assert chosen([ev(1, sender="@_b_x:other.test")]) == []  # only users of this server
    assert chosen([ev(1, type_="m.room.member", state_key="@_b_y:hs.test")]) == [1]
    assert chosen([ev(1, room="!bridged1:hs.test")]) == [1]
    assert chosen([ev(1)], aliases={"!r:hs.test": ["#_b_chan:hs.test"]}) == [1]
    assert chosen([ev(1)], joined_now={"!r:hs.test": {"@_b_z:hs.test"}}) == [1]


def test_interest_follows_membership_at_each_event():
    # @_b_z joined at 3 and left at 6: events 2 and 7 are not for the service, 4 and 5 are.
    join = MemberDelta("!r:hs.test", "@_b_z:hs.test", "$join", "$before", 3)
    leave = MemberDelta("!r:hs.test", "@_b_z:hs.test", "$leave", "$join", 6)
    was_join = {"$join": True, "$leave": False, "$before": False}
    events = [ev(2), ev(3, type_="m.room.member", sender="@_b_z:hs.test", state_key="@_b_z:hs.test"), ev(4), ev(5),
              ev(6, type_="m.room.member", sender="@_b_z:hs.test", state_key="@_b_z:hs.test"), ev(7)]
    assert chosen(events, joined_now={}, deltas=[leave, join], was_join=was_join) == [3, 4, 5, 6]
    # Joined now, but only since after these events.
    late = MemberDelta("!r:hs.test", "@_b_z:hs.test", "$join", None, 9)
    assert chosen([ev(2), ev(4)], joined_now={"!r:hs.test": {"@_b_z:hs.test"}}, deltas=[late],
                  was_join={"$join": True}) == []


def test_backoff_grows_to_a_cap():
    delays = [appservice_transactions.backoff_ms(n) for n in range(1, 15)]
    assert 900 <= delays[0] <= 1000 and 1800 <= delays[1] <= 2000
    assert all(d <= appservice_transactions.MAX_BACKOFF_MS for d in delays)
    assert delays[-1] >= 0.9 * appservice_transactions.MAX_BACKOFF_MS


def test_a_live_service_is_retried_sooner():
    """A ping brings a backing-off service's retry forward every time; its other requests
    at most every ALIVE_RETRY_MS."""
    from gateway.config.appservice import AppServiceConfig

    now = [1_000_000]
    service, _ = parse_registration({**RAW_SERVICE, "url": "http://127.0.0.1:9"}, "hs.test")
    sender = appservice_transactions.AppServiceTransactions(
        server_name="hs.test", config=AppServiceConfig(services=(service,)), api=None, store=None, destinations=None,
        e2e_store=None, receipts=None, events=None, get_typing=lambda r: [], clock_ms=lambda: now[0])
    queue = sender.queues[service.id]
    retried = []
    queue.retry_now = lambda: retried.append(now[0])
    sender.on_alive(service, False)
    assert retried == []  # not backing off: nothing to bring forward
    queue.failures = 3
    sender.on_alive(service, False)
    sender.on_alive(service, False)
    assert len(retried) == 1
    sender.on_alive(service, True)
    sender.on_alive(service, True)
    assert len(retried) == 3
    now[0] += appservice_transactions.ALIVE_RETRY_MS
    sender.on_alive(service, False)
    assert len(retried) == 4


# --- with a server and a fake service ------------------------------------------------------------


@pytest.fixture
async def service():
    async with fake_appservice(HS_TOKEN) as fake:
        yield fake


@pytest.fixture
def config_overrides(tmp_path, service):
    reg = {"id": "bridge", "url": service.url, "as_token": AS_TOKEN, "hs_token": HS_TOKEN, "sender_localpart": "bot",
           "receive_ephemeral": True, "org.matrix.msc3202": True,
           "namespaces": {"users": [{"exclusive": True, "regex": "@_b_.*"}],
                          "aliases": [{"exclusive": True, "regex": "#_b_.*"}]}}
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(reg))
    return {"app_service_config_files": [str(path)], "experimental_features": {
        "msc2409_to_device_messages_enabled": True, "msc3202_transaction_extensions": True}}


@pytest.fixture
async def started(hs, monkeypatch):
    monkeypatch.setattr(appservice_transactions, "MIN_BACKOFF_MS", 20)
    await hs.appservices.ensure_senders()
    await hs.appservice_transactions.start()


async def send(client, token: str, room_id: str, body: str, txn: str) -> str:
    resp = await client.put(f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/{txn}",
                            headers=auth_header(token), json={"msgtype": "m.text", "body": body})
    assert resp.status == 200, await resp.text()
    return (await resp.json())["event_id"]


async def new_room(client, token: str, **body) -> str:
    resp = await client.post("/_matrix/client/v3/createRoom", headers=auth_header(token),
                             json={"preset": "public_chat", **body})
    return (await resp.json())["room_id"]


async def test_only_rooms_of_interest(client, service, started):
    alice = await register(client, "alice")
    quiet = await new_room(client, alice["access_token"])
    bridged = await new_room(client, alice["access_token"])
    await send(client, alice["access_token"], quiet, "not for the bridge", "q1")
    resp = await client.post(f"/_matrix/client/v3/join/{bridged}", headers=AS, json={})
    assert resp.status == 200
    wanted = await send(client, alice["access_token"], bridged, "for the bridge", "b1")
    await service.wait_for(lambda: any(e["event_id"] == wanted for e in service.events()))
    bodies = [e["content"].get("body") for e in service.events() if e["type"] == "m.room.message"]
    assert bodies == ["for the bridge"]
    assert {e["room_id"] for e in service.events()} == {bridged}
    # The bot's own join is in it (it is the target), with the client event format.
    join = next(e for e in service.events() if e["type"] == "m.room.member")
    assert join["state_key"] == "@bot:hs.test" and "unsigned" in join and "origin_server_ts" in join
    assert all(r.authorization == f"Bearer {HS_TOKEN}" for r in service.requests)
    # A local alias of its namespace makes another room interesting.
    other = await new_room(client, alice["access_token"])
    resp = await client.put("/_matrix/client/v3/directory/room/%23_b_room:hs.test", headers=AS,
                            json={"room_id": other})
    assert resp.status == 200
    event_id = await send(client, alice["access_token"], other, "aliased", "o1")
    await service.wait_for(lambda: any(e["event_id"] == event_id for e in service.events()))


async def test_retries_keep_the_transaction(client, service, hs, started):
    alice = await register(client, "alice")
    room = await new_room(client, alice["access_token"])
    await client.post(f"/_matrix/client/v3/join/{room}", headers=AS, json={})
    await service.wait_for(lambda: service.events())
    service.fail_transactions = 3
    first = await send(client, alice["access_token"], room, "one", "t1")
    # Three refusals, then the same transaction is accepted.
    await service.wait_for(lambda: sum(1 for r in service.requests if "/transactions/" in r.path and not r.ok) == 3
                           and any(e["event_id"] == first for e in service.events()))
    attempts = [(txn_id, body) for txn_id, body in service.transactions() if any(
        e["event_id"] == first for e in body["events"])]
    assert len(attempts) == 4
    assert len({txn_id for txn_id, _ in attempts}) == 1
    assert len({tuple(e["event_id"] for e in body["events"]) for _, body in attempts}) == 1
    # Later events go in a later transaction; no event is in two different transactions.
    second = await send(client, alice["access_token"], room, "two", "t2")
    await service.wait_for(lambda: any(e["event_id"] == second for e in service.events()))
    by_event: dict[str, set[str]] = {}
    for txn_id, body in service.transactions():
        for e in body["events"]:
            by_event.setdefault(e["event_id"], set()).add(txn_id)
    assert all(len(txns) == 1 for txns in by_event.values())
    ids = [int(t) for t, _ in service.transactions()]
    assert ids == sorted(ids)
    await until(lambda: hs.appservices.store.count_txns("bridge"), lambda n: n == 0)


async def test_ephemeral_data(client, service, hs, started):
    alice = await register(client, "alice")
    ah = auth_header(alice["access_token"])
    room = await new_room(client, alice["access_token"])
    await as_register(client, "_b_bob")
    await client.post(f"/_matrix/client/v3/join/{room}", headers=AS, params={"user_id": "@_b_bob:hs.test"}, json={})
    event_id = await send(client, alice["access_token"], room, "read me", "r1")
    await client.put(f"/_matrix/client/v3/rooms/{room}/typing/{alice['user_id']}", headers=ah,
                     json={"typing": True, "timeout": 30000})
    await client.post(f"/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}", headers=ah, json={})
    await client.post(f"/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{event_id}", headers=ah, json={})
    await client.post(f"/_matrix/client/v3/rooms/{room}/receipt/m.read.private/{event_id}", headers=AS,
                      params={"user_id": "@_b_bob:hs.test"}, json={})
    await client.put(f"/_matrix/client/v3/presence/{alice['user_id']}/status", headers=ah,
                     json={"presence": "online", "status_msg": "bridging"})

    def ephemeral():
        return [e for _, body in service.transactions() for e in body.get("ephemeral", [])]

    def has_everything():
        kinds = {e["type"] for e in ephemeral()}
        return {"m.typing", "m.receipt", "m.presence"} <= kinds and private_receipt_users()

    def private_receipt_users():
        return {u for e in ephemeral() if e["type"] == "m.receipt"
                for u in e["content"].get(event_id, {}).get("m.read.private", {})}

    await service.wait_for(has_everything)
    typing = next(e for e in ephemeral() if e["type"] == "m.typing")
    assert typing["room_id"] == room and alice["user_id"] in typing["content"]["user_ids"]
    receipt = next(e for e in ephemeral() if e["type"] == "m.receipt" and "m.read" in e["content"].get(event_id, {}))
    assert receipt["room_id"] == room and alice["user_id"] in receipt["content"][event_id]["m.read"]
    # Private receipts: only its own users'.
    assert private_receipt_users() == {"@_b_bob:hs.test"}
    presence = next(e for e in ephemeral() if e["type"] == "m.presence")
    assert presence["sender"] == alice["user_id"] and presence["content"]["status_msg"] == "bridging"
    # The unstable key is only for registrations that asked with it.
    assert all("de.sorunome.msc2409.ephemeral" not in body for _, body in service.transactions())


async def as_register(client, localpart: str, **extra) -> dict:
    resp = await client.post("/_matrix/client/v3/register", headers=AS,
                             json={"type": "m.login.application_service", "username": localpart, **extra})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_to_device_device_lists_and_key_counts(client, service, hs, started):
    """MSC2409 to-device messages and MSC3202's device lists and key counts, for the
    service's users' devices (with the experimental switches Synapse has)."""
    alice = await register(client, "alice")
    ah = auth_header(alice["access_token"])
    puppet = await as_register(client, "_b_carol", device_id="PUPPETDEV")
    room = await new_room(client, alice["access_token"])
    await client.post(f"/_matrix/client/v3/join/{room}", headers=auth_header(puppet["access_token"]), json={})
    # The puppet's device uploads one-time keys; alice claims one and sends it a to-device message.
    resp = await client.post("/_matrix/client/v3/keys/upload", headers=auth_header(puppet["access_token"]), json={
        "one_time_keys": {f"signed_curve25519:K{i}": {"key": f"k{i}", "signatures": {}} for i in range(3)}})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/_matrix/client/v3/keys/claim", headers=ah, json={
        "one_time_keys": {"@_b_carol:hs.test": {"PUPPETDEV": "signed_curve25519"}}})
    assert (await resp.json())["one_time_keys"]["@_b_carol:hs.test"]["PUPPETDEV"]
    # The bot's own device (encrypted bridges' bots have one) gets them too.
    resp = await client.post("/_matrix/client/v3/login", headers=AS, json={
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "bot"},
        "device_id": "BOTDEV"})
    assert resp.status == 200, await resp.text()
    resp = await client.put("/_matrix/client/v3/sendToDevice/m.room_key_request/td1", headers=ah, json={
        "messages": {"@_b_carol:hs.test": {"PUPPETDEV": {"action": "request", "body": 1}},
                     "@bot:hs.test": {"BOTDEV": {"action": "request", "body": 2}},
                     alice["user_id"]: {alice["device_id"]: {"action": "request", "body": 3}}}})
    assert resp.status == 200
    # alice changes her devices: a device list change of a user sharing a room with the puppet.
    resp = await client.post("/_matrix/client/v3/keys/upload", headers=ah, json={"device_keys": {
        "user_id": alice["user_id"], "device_id": alice["device_id"], "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"ed25519:{alice['device_id']}": "x", f"curve25519:{alice['device_id']}": "y"}, "signatures": {}}})
    assert resp.status == 200, await resp.text()

    def bodies():
        return [body for _, body in service.transactions()]

    def to_device():
        return [m for b in bodies() for m in b.get("de.sorunome.msc2409.to_device", [])]

    def changed():
        return {u for b in bodies() for u in b.get("org.matrix.msc3202.device_lists", {}).get("changed", [])}

    def counts():
        return [b["org.matrix.msc3202.device_one_time_keys_count"] for b in bodies()
                if "org.matrix.msc3202.device_one_time_keys_count" in b]

    await service.wait_for(lambda: len(to_device()) == 2 and alice["user_id"] in changed() and counts())
    # Its users' devices' messages, not alice's own.
    assert sorted(to_device(), key=lambda m: m["to_user_id"]) == [
        {"type": "m.room_key_request", "sender": alice["user_id"], "content": {"action": "request", "body": 1},
         "to_user_id": "@_b_carol:hs.test", "to_device_id": "PUPPETDEV"},
        {"type": "m.room_key_request", "sender": alice["user_id"], "content": {"action": "request", "body": 2},
         "to_user_id": "@bot:hs.test", "to_device_id": "BOTDEV"}]
    assert counts()[-1]["@_b_carol:hs.test"]["PUPPETDEV"]["signed_curve25519"] == 2
    # Acknowledged: the message leaves the device's inbox.
    async def inbox() -> int:
        return int(await hs.db.fetchval("SELECT COUNT(*) FROM device_inbox WHERE user_id = $1", "@_b_carol:hs.test"))

    await until(lambda: inbox(), lambda n: n == 0)
    assert int(await hs.db.fetchval("SELECT COUNT(*) FROM device_inbox WHERE user_id = $1", alice["user_id"])) == 1


async def until(read, check, timeout: float = 10):
    """Poll ``read()`` until ``check`` holds for its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(value := await read()):
        assert loop.time() < deadline, f"still {value!r}"
        await asyncio.sleep(0.02)
