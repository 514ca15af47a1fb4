"""Joining a room through a scripted resident server whose send_join answer carries bad
events (bad signatures, bad content hashes, broken auth chains), on both database
engines: the bad events are dropped or rejected and never reach the room's state or a
client; a join whose state lacks a valid create event fails with a clear error."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web

from federation.auth_rules import auth_types_for_event
from federation.room_membership import membership_template
from federation.room_versions import get_room_version
from tests.support.fake_remote import FakeRemote, RoomView, local_gateway
from tests.support.tls import TestCA

from gateway.http import MatrixError


@pytest.fixture
def ca(tmp_path):
    return TestCA(tmp_path / "ca")


@pytest.fixture
async def gw(tmp_path, database_config, ca):
    async with local_gateway(tmp_path, database_config, ca) as g:
        yield g


class Resident:
    """A fake resident server for one room: answers make_join from its view and
    send_join with ``state``/``auth_chain`` the test chooses."""

    def __init__(self, remote: FakeRemote, view: RoomView):
        self.remote, self.view = remote, view
        self.state: list[dict] = []
        self.auth_chain: list[dict] = []
        self.joins: list[dict] = []
        #: More template content (a restricted join's authoriser).
        self.content: dict = {}
        #: The ``event`` of the send_join answer, from the join sent (None: no such field).
        self.returned_event = None
        remote.extra_routes += [
            ("GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}", self.make_join),
            ("PUT", "/_matrix/federation/v2/send_join/{room_id}/{event_id}", self.send_join),
        ]

    async def make_join(self, request: web.Request) -> web.Response:
        rv, view = self.view.rv, self.view
        assert "10" in request.query.getall("ver")
        user_id = request.match_info["user_id"]
        content = {"membership": "join", **self.content}
        keys = auth_types_for_event(rv, "m.room.member", user_id, user_id, content)
        template = membership_template(
            rv, room_id=view.room_id, user_id=user_id, content=content, prev_event_ids=view.head,
            auth_event_ids=[view.state[k].event_id for k in sorted(keys) if k in view.state], depth=view.depth + 1,
            origin=self.remote.server_name, origin_server_ts=int(time.time() * 1000))
        return web.json_response({"room_version": rv.identifier, "event": template})

    async def send_join(self, request: web.Request) -> web.Response:
        self.joins.append(await request.json())
        answer = {"origin": self.remote.server_name, "state": self.state, "auth_chain": self.auth_chain}
        if self.returned_event is not None:
            answer["event"] = self.returned_event(self.joins[-1])
        return web.json_response(answer)


def good_room(remote: FakeRemote, version: str = "10") -> RoomView:
    rv = get_room_version(version)
    creator = f"@creator:{remote.server_name}"
    view = RoomView(remote, rv, f"!room:{remote.server_name}")
    view.make("m.room.create", creator, {"room_version": version, "creator": creator}, state_key="")
    view.make("m.room.member", creator, {"membership": "join"}, state_key=creator)
    view.make("m.room.power_levels", creator, {"users": {creator: 100}}, state_key="")
    view.make("m.room.join_rules", creator, {"join_rule": "public"}, state_key="")
    view.make("m.room.history_visibility", creator, {"history_visibility": "shared"}, state_key="")
    view.make("m.room.name", creator, {"name": "Good name"}, state_key="")
    return view


def pdus_of(view: RoomView) -> list[dict]:
    return [view.remote.pdus[p.event_id] for p in view.state.values()]


async def test_bad_events_in_send_join_are_dropped_or_rejected(gw, ca):
    hs = gw.hs
    remote = FakeRemote(ca)
    view = good_room(remote)
    creator = f"@creator:{remote.server_name}"
    # A topic whose signature is forged: dropped (not stored).
    forged = view.make("m.room.topic", creator, {"topic": "forged"}, state_key="", advance=False)
    sig = forged["signatures"][remote.server_name]
    key_id = next(iter(sig))
    forged["signatures"] = {remote.server_name: {key_id: sig[key_id][:-4] + "AAAA"}}
    # A name whose content was changed after signing: the hash fails, only the
    # redacted copy is kept (no name content reaches anyone).
    tampered = view.make("m.room.name", creator, {"name": "Tampered"}, state_key="", advance=False)
    tampered = {**tampered, "content": {"name": "Evil"}}
    # A member whose auth events are missing from the answer: rejected.
    evil = f"@evil:{remote.server_name}"
    orphan = view.make("m.room.member", evil, {"membership": "join"}, state_key=evil, advance=False)
    orphan["auth_events"] = ["$" + "A" * 43]
    from federation.signing import sign_event
    orphan.pop("hashes")
    orphan["signatures"] = {}
    orphan = sign_event(orphan, remote.server_name, remote.key, room_version=view.rv)
    # A member of another room: dropped.
    other = view.make("m.room.member", evil, {"membership": "join"}, state_key="@x:" + remote.server_name,
                      advance=False)
    other["room_id"] = "!other:" + remote.server_name
    resident = Resident(remote, view)
    good = pdus_of(view)
    resident.state = good + [forged, tampered, orphan, other]
    resident.auth_chain = good
    async with remote:  # extra_routes are read when it starts

        alice = f"@alice:{gw.server_name}"
        event_id = await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                              {"membership": "join", "displayname": "Alice"})
        assert len(resident.joins) == 1 and resident.joins[0]["content"]["displayname"] == "Alice"
        member = await hs.events.state.get_membership(view.room_id, alice)
        assert member is not None and member.membership == "join" and member.event_id == event_id

        state = await hs.events.state.get_current_state_ids(view.room_id)
        ids = set(state.values())
        forged_id, tampered_id, orphan_id, other_id = (RoomView.event_id(e, view.rv)
                                                       for e in (forged, tampered, orphan, other))
        # Nothing bad is in the room's state; the good name stays.
        assert not ids & {forged_id, orphan_id, other_id}
        assert ("m.room.member", evil) not in state
        name = (await hs.events.get_pdus([state[("m.room.name", "")]]))[state[("m.room.name", "")]]
        assert name.content in ({"name": "Good name"}, {})
        assert name.content.get("name") != "Evil"
        if state[("m.room.name", "")] == tampered_id:
            assert name.content == {}  # only ever the redacted copy
        assert "m.room.topic" not in {k[0] for k in state}
        # Dropped events are not stored; the orphan is stored as rejected.
        metas = await hs.events.store.get_event_meta([forged_id, orphan_id, other_id, tampered_id])
        assert forged_id not in metas and other_id not in metas
        assert metas[orphan_id].rejected_reason is not None
        stored = await hs.events.store.get_event(tampered_id)
        assert stored is None or stored.pdu.content == {}


async def test_join_without_a_valid_create_event_fails_clearly(gw, ca):
    hs = gw.hs
    remote = FakeRemote(ca)
    view = good_room(remote)
    resident = Resident(remote, view)
    bad: list[dict[str, Any]] = []
    for e in pdus_of(view):
        e = dict(e)
        if e["type"] == "m.room.create":  # its signature no longer matches
            e["signatures"] = {remote.server_name: {k: "A" * 86 for k in e["signatures"][remote.server_name]}}
        bad.append(e)
    resident.state = bad
    resident.auth_chain = bad
    async with remote:

        alice = f"@alice:{gw.server_name}"
        with pytest.raises(MatrixError) as err:
            await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                       {"membership": "join"})
        assert err.value.errcode == "M_NOT_FOUND" and "create event" in err.value.error
        member = await hs.events.state.get_membership(view.room_id, alice)
        assert member is None
        assert await hs.events.state.get_current_state_ids(view.room_id) == {}


async def test_a_restricted_join_needs_the_authorisers_signature(gw, ca):
    """The resident names its user in join_authorised_via_users_server: its send_join
    answer must carry our event with its valid signature; without it (or with a forged
    one) the join fails and nothing is stored, with it the join is ours."""
    hs = gw.hs
    remote = FakeRemote(ca)
    view = good_room(remote)
    creator = f"@creator:{remote.server_name}"
    view.make("m.room.join_rules", creator, {"join_rule": "restricted", "allow": [
        {"type": "m.room_membership", "room_id": f"!space:{remote.server_name}"}]}, state_key="")
    resident = Resident(remote, view)
    resident.state = resident.auth_chain = pdus_of(view)
    resident.content = {"join_authorised_via_users_server": creator}
    alice = f"@alice:{gw.server_name}"
    from federation.signing import generate_signing_key, sign_event

    def signed_by(key):
        return lambda ev: sign_event(ev, remote.server_name, key, room_version=view.rv)

    async with remote:
        for returned, why in ((None, "sent back no event"), (lambda ev: ev, "not signed properly"),
                              (signed_by(generate_signing_key("fr1")), "not signed properly")):
            resident.returned_event = returned
            with pytest.raises(MatrixError) as err:
                await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                           {"membership": "join"})
            assert why in err.value.error
            assert await hs.events.state.get_membership(view.room_id, alice) is None
        assert len(resident.joins) == 3

        resident.returned_event = signed_by(remote.key)
        event_id = await hs.federation_membership.join_remote(alice, view.room_id, [remote.server_name],
                                                              {"membership": "join"})
        member = await hs.events.state.get_membership(view.room_id, alice)
        assert member is not None and member.membership == "join" and member.event_id == event_id
        stored = await hs.events.store.get_event(event_id)
        assert set(stored.pdu.signatures) == {gw.server_name, remote.server_name}
        assert stored.pdu.content["join_authorised_via_users_server"] == creator


@pytest.mark.parametrize("answer, status, errcode, extra", [
    ({"errcode": "M_TEST_ERROR_CODE", "error": "denied!"}, 400, "M_TEST_ERROR_CODE", {}),
    ({"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "y u no upgrade", "room_version": "future-1"},
     400, "M_INCOMPATIBLE_ROOM_VERSION", {"room_version": "future-1"}),
    # About our request, not for the client (the spec: fail with a 5xx rather than pass it on).
    ({"errcode": "M_INVALID_PARAM", "error": "bad ver"}, 404, "M_NOT_FOUND", {}),
])
async def test_a_residents_make_join_error_reaches_the_client(gw, ca, answer, status, errcode, extra):
    """The spec, on make_join's 400: "The error should be passed through to clients so
    that they may give better feedback to users"."""
    remote = FakeRemote(ca)

    async def make_join(request: web.Request) -> web.Response:
        return web.json_response(answer, status=400)

    remote.extra_routes.append(("GET", "/_matrix/federation/v1/make_join/{room_id}/{user_id}", make_join))
    async with remote:
        with pytest.raises(MatrixError) as err:
            await gw.hs.federation_membership.join_remote(f"@alice:{gw.server_name}", f"!r:{remote.server_name}",
                                                          [remote.server_name], {"membership": "join"})
    assert (err.value.status, err.value.errcode) == (status, errcode)
    assert {k: v for k, v in err.value.to_json().items() if k not in ("errcode", "error")} == extra
