"""Faster joins (partial state) as the joining server, against scripted residents, on
both database engines: the join asks for ``omit_members``, returns at once with the room
partial (messages flow both ways, /sync shows it, member lists wait), the background
resync fetches the full state (``/state_ids`` then ``/event`` or ``/state``) from the
servers in turn, drops bad events, re-checks what arrived meanwhile, and a partial room is
never served to other joining servers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.events import PDU, build_event
from federation.net.client import FederationRequestError
from federation.room_membership import membership_template
from federation.room_versions import get_room_version
from federation.signing import quote_path_segment, sign_event
from gateway.services.federation import partial_state as partial_state_module
from tests.gateway.federation_api.test_transactions import ca  # noqa: F401
from tests.support.client_api import LAZY_MEMBERS, Client, has_text, member_event, q
from tests.support.fake_remote import FakeRemote, RoomView, local_gateway

#: Remote users joined before ours.
MEMBERS = 6


@pytest.fixture
async def gw(tmp_path, database_config, ca):
    """Our server, sending to other servers (our events reach the resident)."""
    async with local_gateway(tmp_path, database_config, ca) as g:
        await g.hs.federation_sender.start()
        yield g


class PartialResident:
    """A resident of one room: answers make_join, and send_join with the member events
    left out when asked (``servers_in_room`` as given); records our join in its view (so
    that ``/state_ids`` at it works) and the PDUs our server sends it. ``gate`` holds its
    ``/state_ids`` and ``/event`` answers; ``fail`` lists endpoints that answer 500."""

    def __init__(self, remote: FakeRemote, view: RoomView, servers_in_room: Any = None):
        self.remote, self.view = remote, view
        self.servers_in_room = servers_in_room if servers_in_room is not None else [remote.server_name]
        self.omit_asked: list[bool] = []
        self.received: list[dict] = []
        self.arrived = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.hold = {"state_ids", "event"}  # what the gate holds
        self.held = asyncio.Event()  # a held request arrived
        self.fail: set[str] = set()
        self.junk: set[str] = set()  # endpoints that answer 200 with nonsense
        remote.extra_routes += [
            ("GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}", self.make_join),
            ("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}", self.send_join),
            ("PUT", "/_matrix/federation/v1/send/{txn_id}", self.send),
        ]
        remote._state_ids = self._held("state_ids", remote._state_ids)
        remote._event = self._held("event", remote._event)

    def _held(self, name: str, handler):
        async def wrapped(request: web.Request) -> web.Response:
            if name in self.fail:
                self.remote._log(request)
                return web.json_response({"errcode": "M_UNKNOWN", "error": "down"}, status=500)
            if name in self.junk:
                self.remote._log(request)
                return web.json_response({"pdu_ids": "all of them", "pdus": [{"type": "m.room.create"}]})
            if self.gate is not None and not self.gate.is_set() and name in self.hold:
                self.held.set()
                await self.gate.wait()
            return await handler(request)
        return wrapped

    async def make_join(self, request: web.Request) -> web.Response:
        view = self.view
        user_id = request.match_info["user_id"]
        keys = [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", "")]
        template = membership_template(
            view.rv, room_id=view.room_id, user_id=user_id, content={"membership": "join"},
            prev_event_ids=view.head, auth_event_ids=[view.state[k].event_id for k in keys], depth=view.depth + 1,
            origin=self.remote.server_name, origin_server_ts=int(time.time() * 1000))
        return web.json_response({"room_version": view.rv.identifier, "event": template})

    async def send_join(self, request: web.Request) -> web.Response:
        omit = request.query.get("omit_members") == "true"
        self.omit_asked.append(omit)
        join = await request.json()
        rv, remote = self.view.rv, self.remote
        join_id = RoomView.event_id(join, rv)
        before = {k: p.event_id for k, p in self.view.state.items()}
        remote.pdus[join_id] = join
        remote.state_before[join_id] = before
        state_ids = [e for k, e in sorted(before.items()) if not (omit and k[0] == "m.room.member")]
        chain = [c for c in remote._auth_chain([*state_ids, join_id]) if not omit or c not in state_ids]
        body: dict[str, Any] = {"origin": remote.server_name, "state": [remote.pdus[e] for e in state_ids],
                                "auth_chain": [remote.pdus[c] for c in chain], "event": join}
        if omit:
            body.update(members_omitted=True, servers_in_room=self.servers_in_room)
        self.view.learn([PDU(dict(join), rv, join_id)])
        return web.json_response(body)

    async def send(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received += body.get("pdus", [])
        self.arrived.set()
        return web.json_response({"pdus": {}})

    async def wait_for_text(self, text: str, timeout: float = 30) -> dict:
        """The first PDU our server sent it with this body."""
        return await until_received(self, lambda p: p.get("content", {}).get("body") == text, timeout)


async def until_received(resident: PartialResident, match, timeout: float = 30) -> dict:
    """The first PDU our server sent the resident that ``match`` accepts."""
    async def find():
        while True:
            for p in resident.received:
                if match(p):
                    return p
            resident.arrived.clear()
            await resident.arrived.wait()
    return await asyncio.wait_for(find(), timeout)


def member_room(remote: FakeRemote, version: str = "10", members: int = MEMBERS) -> tuple[RoomView, list[str]]:
    rv = get_room_version(version)
    creator = f"@creator:{remote.server_name}"
    view = RoomView(remote, rv, f"!big:{remote.server_name}")
    view.make("m.room.create", creator, {"room_version": version, "creator": creator}, state_key="")
    view.make("m.room.member", creator, {"membership": "join", "displayname": "Creator"}, state_key=creator)
    view.make("m.room.power_levels", creator, {"users": {creator: 100}}, state_key="")
    view.make("m.room.join_rules", creator, {"join_rule": "public"}, state_key="")
    view.make("m.room.history_visibility", creator, {"history_visibility": "shared"}, state_key="")
    view.make("m.room.name", creator, {"name": "Big room"}, state_key="")
    users = [creator]
    for i in range(members):
        u = f"@m{i}:{remote.server_name}"
        view.make("m.room.member", u, {"membership": "join", "displayname": f"M{i}"}, state_key=u)
        users.append(u)
    view.make("m.room.message", creator, {"msgtype": "m.text", "body": "before anyone else"})
    return view, users


async def register(session: aiohttp.ClientSession, gw, localpart: str) -> Client:
    async with session.post(f"{gw.url}/_matrix/client/v3/register", json={
            "username": localpart, "password": "secret-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    return Client(session, gw.url, body["access_token"], body["user_id"])


def session_for(gw) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw.ssl))


async def until(predicate, timeout: float = 30) -> None:
    """Poll ``predicate()`` (yielding to the loop) until it is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never met"
        await asyncio.sleep(0.02)


async def joined(hs, room_id: str) -> set[str]:
    return {m.user_id for m in await hs.events.state.get_members(room_id, "join")}


async def test_partial_join_flows_at_once_then_resyncs(gw, ca):
    hs = gw.hs
    remote = FakeRemote(ca)
    view, users = member_room(remote)
    room_id = view.room_id
    resident = PartialResident(remote, view)
    resident.gate = asyncio.Event()
    async with remote, session_for(gw) as s:
        alice = await register(s, gw, "alice")
        alice.sync_filter = LAZY_MEMBERS  # sees the room while partial
        assert await alice.call("POST", f"/join/{q(room_id)}", {}, params={"via": remote.server_name}) == \
            {"room_id": room_id}
        assert resident.omit_asked == [True]
        # Joined at once, with partial state: the room's members are not known yet.
        assert await hs.partial_state.is_partial(room_id)
        assert await joined(hs, room_id) == {alice.user_id}
        await alice.sync_until(member_event(room_id, alice.user_id, "join"))
        name = await alice.call("GET", f"/rooms/{q(room_id)}/state/m.room.name")
        assert name == {"name": "Big room"}

        # A member who joined before us talks, another leaves: accepted against the
        # resolution of our partial state with their auth events (not rejected, not
        # soft-failed), seen by alice.
        talk = view.make("m.room.message", users[1], {"msgtype": "m.text", "body": "hi newcomer"})
        bye = view.make("m.room.member", users[2], {"membership": "leave"}, state_key=users[2])
        answer = await remote.send(hs.server_name, [talk, bye])
        assert all("error" not in r for r in answer["pdus"].values()), answer
        metas = await hs.events.store.get_event_meta([RoomView.event_id(e, view.rv) for e in (talk, bye)])
        assert all(m.rejected_reason is None and not m.soft_failed and not m.outlier for m in metas.values())
        await alice.sync_until(has_text(room_id, "hi newcomer"))
        # Alice talks: our events go to the servers of servers_in_room.
        await alice.send_text(room_id, "hello while partial")
        sent = await resident.wait_for_text("hello while partial")
        assert sent["sender"] == alice.user_id

        # A second user of ours joins the partial room (locally, against the partial state).
        # His client does not lazy-load members: the room is not in his /sync yet.
        bob = await register(s, gw, "bob")
        bob.since = (await bob.call("GET", "/sync"))["next_batch"]
        await bob.call("POST", f"/join/{q(room_id)}", {})
        bob_join = await until_received(resident, lambda p: p.get("state_key") == bob.user_id)
        assert bob_join["content"]["membership"] == "join"
        quiet = await bob.call("GET", "/sync", params={"since": bob.since, "timeout": "0"})
        assert room_id not in quiet["rooms"]["join"]

        # As a resident we do not serve the room yet: joins and its state go elsewhere.
        with pytest.raises(FederationRequestError) as err:
            await remote.client.request("GET", hs.server_name, f"/_matrix/federation/v1/make_join/"
                                        f"{quote_path_segment(room_id)}/{quote_path_segment(users[3])}",
                                        query={"ver": "10"})
        assert err.value.status == 404 and err.value.body["errcode"] == "M_NOT_FOUND"
        with pytest.raises(FederationRequestError) as err:
            await remote.client.request("GET", hs.server_name,
                                        f"/_matrix/federation/v1/state_ids/{quote_path_segment(room_id)}",
                                        query={"event_id": RoomView.event_id(talk, view.rv)})
        assert err.value.status == 404

        # The member list waits for the resync, which is held until now.
        await asyncio.wait_for(resident.held.wait(), 30)
        waiting = asyncio.create_task(alice.call("GET", f"/rooms/{q(room_id)}/joined_members"))
        await until(lambda: hs.partial_state.waiting(room_id) == 1)
        assert not waiting.done()
        resident.gate.set()
        members = await asyncio.wait_for(waiting, 60)
        expected = (set(users) - {users[2]}) | {alice.user_id, bob.user_id}
        assert set(members["joined"]) == expected
        assert members["joined"][users[0]] == {"display_name": "Creator", "avatar_url": None}
        assert not await hs.partial_state.is_partial(room_id)
        assert await joined(hs, room_id) == expected
        state = await hs.events.state.get_current_state_ids(room_id)
        assert state[("m.room.member", users[2])] == RoomView.event_id(bye, view.rv)
        # /members too, and /sync sends the room's state in full once.
        chunk = (await alice.call("GET", f"/rooms/{q(room_id)}/members"))["chunk"]
        assert {e["state_key"] for e in chunk if e["content"]["membership"] == "join"} == expected
        full = await bob.sync_until(member_event(room_id, users[4], "join"))
        assert full["content"]["displayname"] == "M3"  # users[0] is the creator
        # For bob the room arrives now as newly joined: all its state, its latest messages.
        assert has_text(room_id, "hi newcomer")(await bob.call("GET", "/sync", params={"since": quiet["next_batch"]}))

        # Messages both ways after the resync.
        again = view.make("m.room.message", users[3], {"msgtype": "m.text", "body": "now fully joined"})
        await remote.send(hs.server_name, [again])
        await alice.sync_until(has_text(room_id, "now fully joined"))
        await alice.send_text(room_id, "hello with full state")
        await resident.wait_for_text("hello with full state")
        requested = {path for _, path in remote.requests}
        assert "/_matrix/federation/v1/state_ids/{room_id}" in requested
        assert "/_matrix/federation/v1/event/{event_id}" in requested


@pytest.mark.parametrize("failure", ["fail:state_ids", "junk:state_ids", "fail:event", "junk:event"])
async def test_first_server_fails_the_next_one_gives_the_state(gw, ca, failure):
    """The server we joined through answers /state_ids or /event with a 500 or with
    nonsense: the resync moves on to the next server of servers_in_room."""
    hs = gw.hs
    remote, other = FakeRemote(ca), FakeRemote(ca)
    view, users = member_room(remote)
    other.pdus, other.state_before = remote.pdus, remote.state_before  # it knows the room too
    resident = PartialResident(remote, view, servers_in_room=[remote.server_name, "bad name!", other.server_name])
    how, endpoint = failure.split(":")
    getattr(resident, how).add(endpoint)
    async with remote, other:
        alice = f"@alice:{hs.server_name}"
        await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                   {"membership": "join"})
        assert await hs.partial_state.await_full_state(view.room_id, 60)
        assert await joined(hs, view.room_id) == set(users) | {alice}
        assert ("GET", f"/_matrix/federation/v1/{endpoint}/{{{'room_id' if endpoint == 'state_ids' else 'event_id'}}}") \
            in remote.requests
        assert ("GET", "/_matrix/federation/v1/state_ids/{room_id}") in other.requests
        assert ("GET", "/_matrix/federation/v1/event/{event_id}") in other.requests


@pytest.mark.parametrize("checks", ["inline", "processes", "threads"])
async def test_bad_events_in_the_full_state_are_dropped(gw, ca, monkeypatch, checks):
    """Forged, tampered and unauthorised events in the /state answer (read an event at a
    time) are dropped, redacted or rejected: checked here (a small batch), in the
    worker processes, or in threads without them (slices of 3 events)."""
    hs = gw.hs
    if checks != "inline":
        from gateway.services.federation import receive as federation_events

        monkeypatch.setattr(federation_events, "CHECK_CHUNK", 3)
        if checks == "threads":
            monkeypatch.setattr(hs.federation_events, "check_processes", None)
        else:
            assert await hs.federation_events.check_processes.run("ping") == "pong"
    remote = FakeRemote(ca)
    view, users = member_room(remote)
    rv, server = view.rv, remote.server_name
    # A member whose signature is forged: dropped.
    forged_user = f"@forged:{server}"
    forged = view.make("m.room.member", forged_user, {"membership": "join"}, state_key=forged_user)
    forged_id = RoomView.event_id(forged, rv)
    key_id = next(iter(forged["signatures"][server]))
    remote.pdus[forged_id] = {**forged, "signatures": {server: {key_id: "A" * 86}}}
    # A member whose content changed after signing: only the redacted copy is used.
    tampered_user = f"@tampered:{server}"
    tampered = view.make("m.room.member", tampered_user, {"membership": "join", "displayname": "Nice"},
                         state_key=tampered_user)
    tampered_id = RoomView.event_id(tampered, rv)
    remote.pdus[tampered_id] = {**tampered, "content": {"membership": "join", "displayname": "Evil"}}
    # A member whose auth events do not exist: rejected.
    orphan_user = f"@orphan:{server}"
    orphan = sign_event(build_event(
        rv, type="m.room.member", sender=orphan_user, room_id=view.room_id, content={"membership": "join"},
        prev_event_ids=view.head, auth_event_ids=["$" + "B" * 43], depth=view.depth + 1,
        origin_server_ts=int(time.time() * 1000), state_key=orphan_user, origin=server), server, remote.key,
        room_version=rv)
    orphan_id = RoomView.event_id(orphan, rv)
    remote.pdus[orphan_id] = orphan
    view.state[("m.room.member", orphan_user)] = PDU(orphan, rv, orphan_id)
    # All of them lacking at once: one bulk /state instead of /event each.
    monkeypatch.setattr(partial_state_module, "BULK_FETCH_THRESHOLD", 3)
    PartialResident(remote, view)
    async with remote:
        alice = f"@alice:{hs.server_name}"
        await hs.federation_membership.join_remote(alice, view.room_id, [server], {"membership": "join"})
        assert await hs.partial_state.await_full_state(view.room_id, 60)
        state = await hs.events.state.get_current_state_ids(view.room_id)
        assert ("m.room.member", forged_user) not in state and ("m.room.member", orphan_user) not in state
        assert all(("m.room.member", u) in state for u in users)
        metas = await hs.events.store.get_event_meta([forged_id, orphan_id])
        assert forged_id not in metas
        assert metas[orphan_id].rejected_reason is not None
        stored = await hs.events.store.get_event(state[("m.room.member", tampered_user)])
        assert stored.pdu.content == {"membership": "join"}  # the redacted copy, never "Evil"
        member = await hs.events.state.get_membership(view.room_id, tampered_user)
        assert (member.membership, member.displayname) == ("join", None)
        named = await hs.events.state.get_membership(view.room_id, users[0])
        assert (named.membership, named.displayname) == ("join", "Creator")
        assert named.event_id == state[("m.room.member", users[0])]
        assert ("GET", "/_matrix/federation/v1/state/{room_id}") in remote.requests
        # /state had everything but the orphan's made-up auth event, asked for alone (404).
        assert remote.requests.count(("GET", "/_matrix/federation/v1/event/{event_id}")) == 1


async def test_the_resync_writes_its_events_under_the_room_lock_a_slice_at_a_time(gw, ca, monkeypatch):
    """The fetched state goes through one outlier stream; each write of it takes the
    room's lock (a batch being received counts on no one else storing its events), and
    only for that write: there are several, and the members all arrive."""
    from gateway.services.federation import receive as federation_events

    hs = gw.hs
    remote = FakeRemote(ca)
    view, users = member_room(remote)
    monkeypatch.setattr(partial_state_module, "BULK_FETCH_THRESHOLD", 3)
    monkeypatch.setattr(federation_events, "CHECK_CHUNK", 4)
    monkeypatch.setattr(federation_events, "WRITE_SLICE", 3)
    writes: list[tuple[int, bool]] = []
    original = hs.federation_events._write_outliers

    async def recording(room_id, batch):
        writes.append((len(batch), hs.events.room_lock(room_id).locked()))
        await original(room_id, batch)

    monkeypatch.setattr(hs.federation_events, "_write_outliers", recording)
    PartialResident(remote, view)
    async with remote:
        alice = f"@alice:{hs.server_name}"
        await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name], {"membership": "join"})
        before = len(writes)
        assert await hs.partial_state.await_full_state(view.room_id, 60)
        resync = writes[before:]
        assert len(resync) >= 2 and all(locked for _, locked in resync)
        assert not hs.events.room_lock(view.room_id).locked()
        assert set(users) | {alice} == await joined(hs, view.room_id)


async def test_events_the_full_state_refuses_are_rejected_by_the_resync(gw, ca):
    """A banned member's server sends a message citing the member's old join: our partial
    state cannot tell (no member events), so it is accepted; the resync's re-check with the
    full state (the ban) rejects it."""
    hs = gw.hs
    remote = FakeRemote(ca)
    view, users = member_room(remote)
    rv = view.rv
    banned = f"@banned:{remote.server_name}"
    old_join = view.make("m.room.member", banned, {"membership": "join"}, state_key=banned)
    view.make("m.room.member", users[0], {"membership": "ban"}, state_key=banned)
    resident = PartialResident(remote, view)
    resident.gate = asyncio.Event()
    async with remote:
        alice = f"@alice:{hs.server_name}"
        await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                   {"membership": "join"})
        auth = [view.state[("m.room.create", "")].event_id, view.state[("m.room.power_levels", "")].event_id,
                RoomView.event_id(old_join, rv)]
        sneaky = sign_event(build_event(
            rv, type="m.room.message", sender=banned, room_id=view.room_id,
            content={"msgtype": "m.text", "body": "still here"}, prev_event_ids=view.head, auth_event_ids=auth,
            depth=view.depth + 1, origin_server_ts=int(time.time() * 1000), origin=remote.server_name),
            remote.server_name, remote.key, room_version=rv)
        sneaky_id = RoomView.event_id(sneaky, rv)
        remote.pdus[sneaky_id] = sneaky  # its server serves its auth chain
        answer = await remote.send(hs.server_name, [sneaky])
        assert "error" not in answer["pdus"][sneaky_id]
        assert (await hs.events.store.get_event_meta([sneaky_id]))[sneaky_id].rejected_reason is None
        after = view.make("m.room.message", users[1], {"msgtype": "m.text", "body": "after"}, prev=[sneaky_id])
        await remote.send(hs.server_name, [after])
        resident.gate.set()
        assert await hs.partial_state.await_full_state(view.room_id, 60)
        metas = await hs.events.store.get_event_meta([sneaky_id, RoomView.event_id(after, rv)])
        assert metas[sneaky_id].rejected_reason is not None
        assert metas[RoomView.event_id(after, rv)].rejected_reason is None
        state = await hs.events.state.get_current_state_ids(view.room_id)
        ban = (await hs.events.get_pdus([state[("m.room.member", banned)]]))[state[("m.room.member", banned)]]
        assert ban.content["membership"] == "ban"
        extremities = await hs.events.store.get_forward_extremities(view.room_id)
        assert sneaky_id not in extremities and RoomView.event_id(after, rv) in extremities


async def test_faster_joins_off_joins_in_full(tmp_path, database_config, ca):
    remote = FakeRemote(ca)
    view, users = member_room(remote)
    resident = PartialResident(remote, view)
    async with remote, local_gateway(tmp_path, database_config, ca,
                                     {"experimental_features": {"faster_joins": False}}) as g:
        alice = f"@alice:{g.hs.server_name}"
        await g.hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                     {"membership": "join"})
        assert resident.omit_asked == [False]
        assert not await g.hs.partial_state.is_partial(view.room_id)
        assert await joined(g.hs, view.room_id) == set(users) | {alice}


async def test_a_resident_without_servers_in_room_is_asked_itself(gw, ca):
    hs = gw.hs
    remote = FakeRemote(ca)
    view, users = member_room(remote, members=2)
    PartialResident(remote, view, servers_in_room="not a list")
    async with remote:
        alice = f"@alice:{hs.server_name}"
        await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                   {"membership": "join"})
        assert await hs.partial_state.await_full_state(view.room_id, 60)
        assert await joined(hs, view.room_id) == set(users) | {alice}


@pytest.mark.parametrize("held", ["state_ids", "event"])
async def test_a_restart_resumes_the_resync(tmp_path, database_config, ca, held):
    """Our server stops while the resync waits for the resident (before anything was
    fetched, or halfway through fetching the events): the marker stays in the database, and
    the next start finishes the resync."""
    from gateway.storage import open_database
    from tests.conftest import free_port
    from tests.support.gateway_server import running_gateway

    remote = FakeRemote(ca)
    view, users = member_room(remote)
    room_id = view.room_id
    resident = PartialResident(remote, view)
    resident.gate, resident.hold = asyncio.Event(), {held}
    db = {"name": "sqlite3", "args": dict(database_config.args)} if database_config.engine == "sqlite" \
        else {"name": "psycopg2", "args": dict(database_config.args)}
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4,
             "database": db}
    ports = (free_port(), free_port())
    async with remote:
        async with running_gateway(tmp_path, ca, extra, ports=ports) as first, aiohttp.ClientSession() as s:
            async with s.post(f"{first.client_url}/_matrix/client/v3/register", json={
                    "username": "alice", "password": "secret-pass", "auth": {"type": "m.login.dummy"}}) as r:
                body = await r.json()
            alice = Client(s, first.client_url, body["access_token"], body["user_id"])
            await alice.call("POST", f"/join/{q(room_id)}", {}, params={"via": remote.server_name})
            await alice.send_text(room_id, "before the restart")
            await resident.wait_for_text("before the restart")
            await asyncio.wait_for(resident.held.wait(), 30)  # the resync is under way, held
        database = await open_database(first.config.database)
        try:
            rows = await database.fetch("SELECT room_id FROM partial_state_rooms")
            assert [r[0] for r in rows] == [room_id]
        finally:
            await database.close()
        resident.gate.set()
        async with running_gateway(tmp_path, ca, extra, ports=ports) as second, aiohttp.ClientSession() as s:
            assert second.server_name == first.server_name
            alice = Client(s, second.client_url, alice.token, alice.user_id)
            members = await alice.call("GET", f"/rooms/{q(room_id)}/joined_members")  # waits for the resync
            assert set(members["joined"]) == set(users) | {alice.user_id}
            talk = view.make("m.room.message", users[1], {"msgtype": "m.text", "body": "welcome back"})
            await remote.send(second.server_name, [talk])
            await alice.sync_until(has_text(room_id, "welcome back"))
            await alice.send_text(room_id, "after the restart")
            await resident.wait_for_text("after the restart")


async def test_a_join_the_state_refuses_leaves_no_marker(gw, ca):
    """The partial state says the room is invite-only: our join is refused (403) and the
    room is not left marked partial."""
    hs = gw.hs
    remote = FakeRemote(ca)
    view, users = member_room(remote, members=1)
    view.make("m.room.join_rules", users[0], {"join_rule": "invite"}, state_key="")
    resident = PartialResident(remote, view)
    async with remote:
        from gateway.http import MatrixError

        with pytest.raises(MatrixError) as err:
            await hs.federation_membership.join_remote(f"@alice:{hs.server_name}", view.room_id,
                                                       [remote.server_name], {"membership": "join"})
        assert err.value.status == 403 and err.value.errcode == "M_FORBIDDEN"
        assert resident.omit_asked == [True]
        assert not await hs.partial_state.is_partial(view.room_id)
        assert await hs.db.fetchval("SELECT COUNT(*) FROM partial_state_rooms") == 0


async def test_a_room_marked_and_resynced_by_another_process_is_seen_here(hs):
    """Workers: another process's mark and end of resync arrive as ``on_replicated``
    (Redis in a deployment); this process reads the partial rooms again, and requests
    waiting here for the full state go on."""
    from ..conftest import make_user

    alice = await make_user(hs, "alice")
    room_id = await hs.rooms.create_room(alice, {"preset": "public_chat"})
    ps = hs.partial_state
    assert not await ps.is_partial(room_id)  # read, and remembered
    await ps.store.mark(room_id, "$join", "resident.example", ["resident.example"], 1)  # the other process
    assert not await ps.is_partial(room_id)
    ps.on_replicated({"room": room_id, "partial": True})
    assert await ps.is_partial(room_id)
    assert (await ps.servers_for([room_id]))[room_id] == frozenset({"resident.example"})
    waiting = asyncio.create_task(ps.await_full_state(room_id, 60))
    await asyncio.sleep(0)  # a turn of the loop: it starts waiting (nothing to read first)
    assert ps.waiting(room_id) == 1
    await ps.store.unmark(room_id)
    ps.on_replicated({"room": room_id, "partial": False})
    assert await asyncio.wait_for(waiting, 10) is True
    assert not await ps.is_partial(room_id)
    ps.on_replicated("not a change")  # ignored
