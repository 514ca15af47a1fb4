"""Knocking over federation against a scripted remote server, on both database engines.

As the knocking user's server: make_knock / send_knock through a fake resident (bad
templates, a room version without knocking, a refusal, an unreachable first server),
the ``knock_room_state`` it answers (forged or foreign PDUs left out), the knock
retracted through make_leave / send_leave (or, when the room no longer takes it, ended
here), and a denial (a kick) sent to us in a transaction, with forged denials refused.

As the resident: make_knock / send_knock from the remote (join rules, room versions,
``ver``, malformed or badly signed knocks refused with the spec's error codes), then a
denial our federation sender delivers to the knocker's server.

Spec: https://spec.matrix.org/latest/server-server-api/#knocking-rooms
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote

import pytest
from aiohttp import web

from federation.auth_rules import auth_types_for_event
from federation.events import PDU
from federation.net.client import FederationRequestError
from federation.room_membership import event_from_template, membership_template
from federation.room_versions import get_room_version
from federation.signing import generate_signing_key, sign_event
from gateway.http import MatrixError
from tests.gateway.federation_api.test_transactions import alice, ca, gw, join_bob, sync_view  # noqa: F401
from tests.support.fake_remote import FakeRemote, RoomView, remote_room


def q(value: str) -> str:
    return quote(value, safe="")


class FakeResident:
    """The remote as a server resident in ``view``'s room: answers make_knock,
    send_knock, make_leave and send_leave from its view (tests may break them), and
    records the transactions our server sends it."""

    def __init__(self, remote: FakeRemote):
        self.remote = remote
        self.view: RoomView | None = None
        self.knock_room_state: list = []
        self.template_answer = None  # fn(template) -> answer, to send something else
        self.refuse: dict[str, tuple[int, dict]] = {}  # endpoint -> (status, body)
        self.knocks: list[dict] = []
        self.leaves: list[dict] = []
        self.received: list[dict] = []
        self.got_pdu = asyncio.Event()
        remote.extra_routes += [
            ("GET", "/_matrix/federation/v1/make_knock/{room_id}/{user_id}", self._make("knock")),
            ("PUT", "/_matrix/federation/v1/send_knock/{room_id}/{event_id}", self._send("knock")),
            ("GET", "/_matrix/federation/v1/make_leave/{room_id}/{user_id}", self._make("leave")),
            ("PUT", "/_matrix/federation/v2/send_leave/{room_id}/{event_id}", self._send("leave")),
            ("PUT", "/_matrix/federation/v1/send/{txn_id}", self._transaction),
        ]

    def _refusal(self, endpoint: str) -> web.Response | None:
        if endpoint in self.refuse:
            status, body = self.refuse[endpoint]
            return web.json_response(body, status=status)
        return None

    def _make(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            if (refused := self._refusal(f"make_{kind}")) is not None:
                return refused
            view, user_id = self.view, request.match_info["user_id"]
            if kind == "knock":
                assert view.rv.identifier in request.query.getall("ver")
            content = {"membership": kind}
            keys = auth_types_for_event(view.rv, "m.room.member", user_id, user_id, content)
            template = membership_template(
                view.rv, room_id=view.room_id, user_id=user_id, content=content, prev_event_ids=view.head,
                auth_event_ids=[view.state[k].event_id for k in sorted(keys) if k in view.state],
                depth=view.depth + 1, origin=self.remote.server_name, origin_server_ts=int(time.time() * 1000))
            answer = {"room_version": view.rv.identifier, "event": template}
            if self.template_answer is not None and kind == "knock":
                answer = self.template_answer(answer)
            return web.json_response(answer)
        return handler

    def _send(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            if (refused := self._refusal(f"send_{kind}")) is not None:
                return refused
            body = await request.json()
            (self.knocks if kind == "knock" else self.leaves).append(body)
            self.view.learn([PDU.from_pdu_json(body, self.view.rv)])
            return web.json_response({"knock_room_state": self.knock_room_state} if kind == "knock" else {})
        return handler

    async def _transaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received += body.get("pdus", [])
        self.got_pdu.set()
        return web.json_response({"pdus": {}})


@pytest.fixture
async def resident(ca):  # noqa: F811
    remote = FakeRemote(ca)
    fake = FakeResident(remote)
    async with remote:
        yield fake


def knock_room(remote: FakeRemote, version: str = "10", join_rule: str = "knock") -> RoomView:
    """A room on the remote (creator carol) whose join rules are ``join_rule``."""
    view, carol = remote_room(remote, version, join_rule=join_rule, localpart="knockable")
    view.make("m.room.name", carol, {"name": "Knock first"}, state_key="")
    return view


def state_pdus(view: RoomView) -> list[dict]:
    return [view.remote.pdus[view.state[(t, "")].event_id]
            for t in ("m.room.create", "m.room.join_rules", "m.room.name")]


def resign(event: dict, remote: FakeRemote, rv, key=None) -> dict:
    event = {k: v for k, v in event.items() if k not in ("signatures", "hashes")}
    from federation.signing import add_content_hash

    return sign_event(add_content_hash(event), remote.server_name, key or remote.key, room_version=rv)


# =====================================================================================
# As the knocking user's server
# =====================================================================================


@pytest.mark.parametrize("version", ["10", "12"])
async def test_knock_through_a_resident_and_its_room_state(gw, resident, version):
    hs, remote = gw.hs, resident.remote
    view = resident.view = knock_room(remote, version)
    carol = f"@carol:{remote.server_name}"
    good = state_pdus(view)
    forged = resign(view.make("m.room.topic", carol, {"topic": "forged"}, state_key="", advance=False),
                    remote, view.rv, generate_signing_key("fr1"))
    foreign = dict(view.make("m.room.topic", carol, {"topic": "elsewhere"}, state_key="", advance=False))
    foreign["room_id"] = f"!elsewhere:{remote.server_name}"
    foreign = resign(foreign, remote, view.rv)
    bare = {"type": "m.room.avatar", "state_key": "", "sender": carol, "content": {"url": "mxc://a/b"}}
    resident.knock_room_state = [*good, forged, foreign, bare, "junk"]
    user = f"@alice:{gw.server_name}"

    # The first server cannot be reached: the next one is tried.
    event_id = await hs.federation_membership.knock_remote(
        user, view.room_id, ["127.0.0.1:1", remote.server_name], {"membership": "knock", "reason": "hello"})

    (sent,) = resident.knocks
    assert sent["content"] == {"membership": "knock", "reason": "hello"} and sent["sender"] == user
    assert RoomView.event_id(sent, view.rv) == event_id and gw.server_name in sent["signatures"]
    member = await hs.events.state.get_membership(view.room_id, user)
    assert member.membership == "knock" and member.event_id == event_id
    stored = (await hs.events.get_pdus([event_id]))[event_id]
    kept = {(e["type"], e["content"].get("topic")) for e in stored.unsigned["knock_room_state"]}
    expected = {("m.room.create", None), ("m.room.join_rules", None), ("m.room.name", None)}
    # Bare stripped state counts for rooms before v12 only; forged or foreign PDUs never.
    assert kept == expected | ({("m.room.avatar", None)} if version == "10" else set())
    assert all(set(e) == {"type", "state_key", "content", "sender"} for e in stored.unsigned["knock_room_state"])


@pytest.mark.parametrize("breakage", ["membership", "sender", "room", "no_prev_events", "no_event"])
async def test_bad_templates_are_refused(gw, resident, breakage):
    hs, remote = gw.hs, resident.remote
    view = resident.view = knock_room(remote)
    user = f"@alice:{gw.server_name}"

    def break_it(answer):
        event = answer["event"]
        if breakage == "membership":
            event["content"] = {"membership": "join"}
        elif breakage == "sender":
            event["sender"] = f"@mallory:{gw.server_name}"
        elif breakage == "room":
            event["room_id"] = f"!other:{remote.server_name}"
        elif breakage == "no_prev_events":
            del event["prev_events"]
        else:
            return {"room_version": answer["room_version"]}
        return answer

    resident.template_answer = break_it
    with pytest.raises(MatrixError) as err:
        await hs.federation_membership.knock_remote(user, view.room_id, [remote.server_name], {"membership": "knock"})
    assert err.value.status == 404 and remote.server_name in err.value.error
    assert resident.knocks == []
    assert await hs.events.state.get_membership(view.room_id, user) is None


async def test_room_versions_without_knocking_and_refusals(gw, resident):
    hs, remote = gw.hs, resident.remote
    view = resident.view = knock_room(remote)
    user = f"@alice:{gw.server_name}"
    fed = hs.federation_membership

    # A template of a version 6 room: knocking needs 7.
    resident.template_answer = lambda answer: {**answer, "room_version": "6"}
    with pytest.raises(MatrixError) as err:
        await fed.knock_remote(user, view.room_id, [remote.server_name], {"membership": "knock"})
    assert (err.value.status, err.value.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
    resident.template_answer = None

    # The resident says so itself.
    resident.refuse["make_knock"] = (400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "no",
                                           "room_version": "6"})
    with pytest.raises(MatrixError) as err:
        await fed.knock_remote(user, view.room_id, [remote.server_name], {"membership": "knock"})
    assert err.value.errcode == "M_INCOMPATIBLE_ROOM_VERSION"

    # The join rules do not allow knocking: the resident's refusal reaches the client.
    resident.refuse["make_knock"] = (403, {"errcode": "M_FORBIDDEN", "error": "join rule is public"})
    with pytest.raises(MatrixError) as err:
        await fed.knock_remote(user, view.room_id, ["127.0.0.1:1", remote.server_name], {"membership": "knock"})
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    assert "join rule is public" in err.value.error
    del resident.refuse["make_knock"]
    resident.refuse["send_knock"] = (403, {"errcode": "M_FORBIDDEN", "error": "banned"})
    with pytest.raises(MatrixError) as err:
        await fed.knock_remote(user, view.room_id, [remote.server_name], {"membership": "knock"})
    assert err.value.errcode == "M_FORBIDDEN" and "banned" in err.value.error
    assert await hs.events.state.get_membership(view.room_id, user) is None

    # No server to ask.
    with pytest.raises(MatrixError) as err:
        await fed.knock_remote(user, view.room_id, [gw.server_name], {"membership": "knock"})
    assert err.value.errcode == "M_NOT_FOUND"


async def test_retracting_a_knock(gw, resident):
    hs, remote = gw.hs, resident.remote
    view = resident.view = knock_room(remote)
    resident.knock_room_state = state_pdus(view)
    user = f"@alice:{gw.server_name}"
    await hs.rooms.users.create_user(user, password_hash=None, created_ts=0)
    knock_id = await hs.federation_membership.knock_remote(user, view.room_id, [remote.server_name],
                                                           {"membership": "knock"})

    # Through the resident (found from the senders of the room state it showed us).
    await hs.rooms.leave(user, view.room_id, reason="changed my mind")
    (leave,) = resident.leaves
    assert leave["content"] == {"membership": "leave", "reason": "changed my mind"}
    member = await hs.events.state.get_membership(view.room_id, user)
    assert member.membership == "leave" and member.event_id == RoomView.event_id(leave, view.rv)

    # The room no longer takes a leave (say the knock was denied and nobody told us):
    # the knock ends here, with a leave that follows it and is never sent.
    knock_id = await hs.federation_membership.knock_remote(user, view.room_id, [remote.server_name],
                                                           {"membership": "knock"})
    resident.refuse["make_leave"] = (403, {"errcode": "M_FORBIDDEN", "error": "not a member"})
    await hs.rooms.leave(user, view.room_id)
    assert len(resident.leaves) == 1
    member = await hs.events.state.get_membership(view.room_id, user)
    assert member.membership == "leave"
    local = (await hs.events.get_pdus([member.event_id]))[member.event_id]
    assert local.prev_event_ids == (knock_id,) and local.auth_event_ids == (knock_id,)
    assert local.sender == user and local.content == {"membership": "leave"}
    assert (await hs.events.store.get_event_meta([member.event_id]))[member.event_id].outlier


async def test_a_denial_reaches_the_knocker(gw, resident):
    hs, remote = gw.hs, resident.remote
    view = resident.view = knock_room(remote)
    resident.knock_room_state = state_pdus(view)
    carol = f"@carol:{remote.server_name}"
    user = f"@alice:{gw.server_name}"
    knock_id = await hs.federation_membership.knock_remote(user, view.room_id, [remote.server_name],
                                                           {"membership": "knock"})
    kick = view.make("m.room.member", carol, {"membership": "leave", "reason": "no"}, state_key=user,
                     advance=False)
    kick_id = RoomView.event_id(kick, view.rv)
    assert knock_id in kick["auth_events"]

    # Forged denials change nothing: signed by another key, not naming the knock, sent
    # by another server than the sender's, or about a user who did not knock.
    forged = resign(kick, remote, view.rv, generate_signing_key("fr1"))
    unrelated = resign({**kick, "auth_events": [a for a in kick["auth_events"] if a != knock_id]}, remote, view.rv)
    other_sender = resign({**kick, "sender": f"@carol:{gw.server_name}"}, remote, view.rv)
    bob = f"@bob:{gw.server_name}"
    not_knocking = resign({**kick, "state_key": bob}, remote, view.rv)
    answer = await remote.send(gw.server_name, [forged, unrelated, other_sender, not_knocking])
    results = answer["pdus"]
    assert "signature" in results[RoomView.event_id(forged, view.rv)]["error"]
    assert "refer" in results[RoomView.event_id(unrelated, view.rv)]["error"]
    assert "sending server" in results[RoomView.event_id(other_sender, view.rv)]["error"]
    assert "error" in results[RoomView.event_id(not_knocking, view.rv)]
    member = await hs.events.state.get_membership(view.room_id, user)
    assert member.membership == "knock" and member.event_id == knock_id

    # The real one ends the knock; sent again, it is still fine.
    assert await remote.send(gw.server_name, [kick]) == {"pdus": {kick_id: {}}}
    member = await hs.events.state.get_membership(view.room_id, user)
    assert member.membership == "leave" and member.event_id == kick_id
    assert await remote.send(gw.server_name, [kick]) == {"pdus": {kick_id: {}}}

    # A ban ends a knock too.
    view.learn([PDU.from_pdu_json(kick, view.rv)])
    knock_id = await hs.federation_membership.knock_remote(user, view.room_id, [remote.server_name],
                                                           {"membership": "knock"})
    ban = view.make("m.room.member", carol, {"membership": "ban"}, state_key=user, advance=False)
    assert await remote.send(gw.server_name, [ban]) == {"pdus": {RoomView.event_id(ban, view.rv): {}}}
    assert (await hs.events.state.get_membership(view.room_id, user)).membership == "ban"


# =====================================================================================
# As the resident server
# =====================================================================================


async def our_room(alice, join_rule: str = "knock", version: str = "12") -> str:  # noqa: F811
    return (await alice.call("POST", "/createRoom", {
        "preset": "private_chat", "room_version": version, "name": "Ours",
        "initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": join_rule}}]}))["room_id"]


async def make_knock(remote, gw, room_id, user, versions=("1", "7", "10", "12")):  # noqa: F811
    return await remote.client.request(
        "GET", gw.server_name, f"/_matrix/federation/v1/make_knock/{q(room_id)}/{q(user)}",
        query=[("ver", v) for v in versions])


async def send_knock(remote, gw, room_id, event, rv):  # noqa: F811
    event_id = RoomView.event_id(event, rv)
    return await remote.client.request(
        "PUT", gw.server_name, f"/_matrix/federation/v1/send_knock/{q(room_id)}/{q(event_id)}", content=event)


def signed_knock(remote, answer, room_id, user) -> tuple[dict, object]:
    rv = get_room_version(answer["room_version"])
    event = event_from_template(answer["event"], rv, membership="knock", user_id=user, room_id=room_id,
                                server_name=remote.server_name, signing_key=remote.key,
                                origin_server_ts=int(time.time() * 1000), extra_content={"reason": "hi"})
    return event, rv


async def test_remote_knock_on_our_room_then_denied(gw, resident, alice):  # noqa: F811
    hs, remote = gw.hs, resident.remote
    await hs.federation_sender.start()
    room_id = await our_room(alice)
    bob = f"@bob:{remote.server_name}"
    answer = await make_knock(remote, gw, room_id, bob)
    assert answer["room_version"] == "12" and answer["event"]["content"] == {"membership": "knock"}
    event, rv = signed_knock(remote, answer, room_id, bob)
    reply = await send_knock(remote, gw, room_id, event, rv)
    types = {e["type"] for e in reply["knock_room_state"]}
    assert {"m.room.create", "m.room.join_rules", "m.room.name"} <= types
    assert all("signatures" in e for e in reply["knock_room_state"])  # full PDUs (Matrix 1.16)
    member = await hs.events.state.get_membership(room_id, bob)
    assert member.membership == "knock" and member.event_id == RoomView.event_id(event, rv)

    # Knocking again once knocked is fine (the auth rules allow it); joining is not.
    again = await make_knock(remote, gw, room_id, bob)
    assert again["event"]["content"] == {"membership": "knock"}

    # Alice denies the knock: our sender delivers the kick to the knocker's server.
    await alice.call("POST", f"/rooms/{q(room_id)}/kick", {"user_id": bob, "reason": "no"})
    kick_id = (await hs.events.state.get_membership(room_id, bob)).event_id

    async def delivered():
        while not any(RoomView.event_id(p, rv) == kick_id for p in resident.received):
            resident.got_pdu.clear()
            await resident.got_pdu.wait()
    await asyncio.wait_for(delivered(), 30)


async def test_a_knock_through_us_reaches_the_rooms_other_servers(gw, resident, alice, ca):  # noqa: F811
    hs, member_server = gw.hs, resident.remote
    await hs.federation_sender.start()
    room_id = (await alice.call("POST", "/createRoom", {"preset": "public_chat"}))["room_id"]
    view = RoomView(member_server, get_room_version("12"), room_id)
    await sync_view(gw, view)
    await join_bob(gw, member_server, view, "dave")
    await alice.call("PUT", f"/rooms/{q(room_id)}/state/m.room.join_rules", {"join_rule": "knock"})

    # A user of a third server knocks through us: the room's other server gets the knock.
    async with FakeRemote(ca, key_id="k2") as knocker_server:
        erin = f"@erin:{knocker_server.server_name}"
        event, rv = signed_knock(knocker_server, await make_knock(knocker_server, gw, room_id, erin), room_id, erin)
        await send_knock(knocker_server, gw, room_id, event, rv)
    knock_id = RoomView.event_id(event, rv)

    async def forwarded():
        while not any(RoomView.event_id(p, rv) == knock_id for p in resident.received):
            resident.got_pdu.clear()
            await resident.got_pdu.wait()
    await asyncio.wait_for(forwarded(), 30)


@pytest.mark.parametrize(("join_rule", "version", "versions", "status", "errcode"), [
    ("public", "12", ("12",), 403, "M_FORBIDDEN"),  # a public room is joined, not knocked on
    ("invite", "12", ("12",), 403, "M_FORBIDDEN"),
    ("knock", "6", ("6", "12"), 400, "M_INCOMPATIBLE_ROOM_VERSION"),  # no knocking before v7
    ("knock", "12", ("10", "11"), 400, "M_INCOMPATIBLE_ROOM_VERSION"),  # not in ver
    ("knock", "12", (), 400, "M_INCOMPATIBLE_ROOM_VERSION"),
])
async def test_make_knock_refusals(gw, resident, alice, join_rule, version, versions, status, errcode):  # noqa: F811
    remote = resident.remote
    room_id = await our_room(alice, join_rule, version)
    with pytest.raises(FederationRequestError) as err:
        await make_knock(remote, gw, room_id, f"@bob:{remote.server_name}", versions)
    assert err.value.status == status and err.value.body["errcode"] == errcode
    if errcode == "M_INCOMPATIBLE_ROOM_VERSION":
        assert err.value.body["room_version"] == version


async def test_make_knock_for_others_or_unknown_rooms(gw, resident, alice):  # noqa: F811
    remote = resident.remote
    room_id = await our_room(alice)
    with pytest.raises(FederationRequestError) as err:
        await make_knock(remote, gw, room_id, f"@bob:{gw.server_name}")  # not a user of the remote
    assert err.value.status == 403 and err.value.body["errcode"] == "M_FORBIDDEN"
    with pytest.raises(FederationRequestError) as err:
        await make_knock(remote, gw, "!nowhere:" + gw.server_name, f"@bob:{remote.server_name}")
    assert err.value.status == 404 and err.value.body["errcode"] == "M_NOT_FOUND"


@pytest.mark.parametrize("breakage", ["membership", "event_id", "sender", "state_key", "signature", "hash"])
async def test_bad_send_knock_events(gw, resident, alice, breakage):  # noqa: F811
    hs, remote = gw.hs, resident.remote
    room_id = await our_room(alice)
    bob = f"@bob:{remote.server_name}"
    event, rv = signed_knock(remote, await make_knock(remote, gw, room_id, bob), room_id, bob)
    path_event = event
    if breakage == "membership":
        event = resign({**event, "content": {"membership": "join"}}, remote, rv)
    elif breakage == "event_id":
        path_event = resign({**event, "origin_server_ts": 1}, remote, rv)
    elif breakage == "sender":
        other = f"@bob:{gw.server_name}"
        event = resign({**event, "sender": other, "state_key": other}, remote, rv)
    elif breakage == "state_key":
        event = resign({**event, "state_key": f"@carol:{remote.server_name}"}, remote, rv)
    elif breakage == "signature":
        event = resign(event, remote, rv, generate_signing_key("fr1"))
    else:
        event = {**event, "content": {"membership": "knock", "reason": "changed after signing"}}
    event_id = RoomView.event_id(path_event, rv)
    with pytest.raises(FederationRequestError) as err:
        await remote.client.request("PUT", gw.server_name,
                                    f"/_matrix/federation/v1/send_knock/{q(room_id)}/{q(event_id)}", content=event)
    assert err.value.status == 400 and err.value.body["errcode"] == "M_INVALID_PARAM", err.value.body
    assert await hs.events.state.get_membership(room_id, bob) is None
    assert await hs.events.state.get_membership(room_id, event["state_key"]) is None


async def test_send_knock_the_join_rules_do_not_allow(gw, resident, alice):  # noqa: F811
    hs, remote = gw.hs, resident.remote
    knockable = await our_room(alice)
    public = await our_room(alice, "public")
    bob = f"@bob:{remote.server_name}"
    # A template of another room, made into a knock on the public room.
    event, rv = signed_knock(remote, await make_knock(remote, gw, knockable, bob), knockable, bob)
    event = resign({**event, "room_id": public}, remote, rv)
    with pytest.raises(FederationRequestError) as err:
        await send_knock(remote, gw, public, event, rv)
    assert err.value.status == 403 and err.value.body["errcode"] == "M_FORBIDDEN"
    assert await hs.events.state.get_membership(public, bob) is None
