"""send_join v2 as the resident server, with and without ``omit_members``, over real
signed requests from a scripted joining server, on both engines.

Spec: https://spec.matrix.org/latest/server-server-api/#put_matrixfederationv2send_joinroomideventid
- ``omit_members=true``: ``state`` leaves out member events, except (rooms without a
  name or canonical alias) those of the members a room summary names as heroes;
  ``auth_chain`` holds the auth chains of the join and of everything in ``state``
  (events already in ``state`` may be left out); ``members_omitted`` is true and
  ``servers_in_room`` lists the servers with joined members before the join.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from federation.events import PDU
from federation.room_versions import get_room_version
from gateway.storage.users import UserStore

from .test_transactions import alice, ca, gw, join_bob, public_room, remote  # noqa: F401


async def local_member(gw, room_id: str, name: str) -> str:
    user_id = f"@{name}:{gw.server_name}"
    await UserStore(gw.hs.db).create_user(user_id, password_hash=None, created_ts=0)
    await gw.hs.rooms.join(user_id, room_id)
    return user_id


def by_key(events: list[dict], rv) -> dict[tuple[str, str], str]:
    out = {}
    for e in events:
        if "state_key" in e:
            out[(e["type"], e["state_key"])] = PDU.from_pdu_json(e, rv).event_id
    return out


def assert_auth_chains_complete(answer: dict, join: dict, rv) -> None:
    """Every auth event of the join and of every returned event is returned too."""
    returned = {PDU.from_pdu_json(e, rv).event_id: e for e in answer["state"] + answer["auth_chain"]}
    for e in [join, *returned.values()]:
        missing = [a for a in PDU.from_pdu_json(e, rv).auth_event_ids if a not in returned]
        assert not missing, (e["type"], e.get("state_key"), missing)
    ids = [PDU.from_pdu_json(e, rv).event_id for e in answer["auth_chain"]]
    assert len(ids) == len(set(ids))


async def room_with_members(gw, alice, remote, version: str, **extra):
    """alice's public room; bob (remote) then u1..u5 (local) join in that order, u5
    leaves and u4 is banned."""
    room_id, view = await public_room(gw, alice, remote, version, **extra)
    bob = await join_bob(gw, remote, view)
    users = [await local_member(gw, room_id, f"u{i}") for i in range(1, 6)]
    await gw.hs.rooms.leave(users[4], room_id)
    await gw.hs.rooms.ban(alice.user_id, room_id, users[3])
    return room_id, bob, users


@pytest.mark.parametrize("version", ["12", "10"])
async def test_omit_members_keeps_the_heroes_of_an_unnamed_room(gw, remote, alice, version):
    rv = get_room_version(version)
    room_id, bob, users = await room_with_members(gw, alice, remote, version)
    full_state = await gw.hs.events.state.get_current_state_ids(room_id)
    joiner = f"@joiner:{remote.server_name}"
    join, answer = await remote.join_via(gw.server_name, room_id, joiner, omit_members=True)

    assert answer["members_omitted"] is True
    state = by_key(answer["state"], rv)
    # Everything but the members is there, as in our state before the join.
    assert {k: v for k, v in state.items() if k[0] != "m.room.member"} == \
        {k: v for k, v in full_state.items() if k[0] != "m.room.member"}
    # The heroes: the first five joined (or invited) members in the order they joined.
    members = {k[1] for k in state if k[0] == "m.room.member"}
    assert members == {alice.user_id, bob, users[0], users[1], users[2]}
    assert all(state[("m.room.member", u)] == full_state[("m.room.member", u)] for u in members)
    assert_auth_chains_complete(answer, join, rv)
    # What state already has is not repeated in auth_chain.
    chain_ids = {PDU.from_pdu_json(e, rv).event_id for e in answer["auth_chain"]}
    assert not chain_ids & set(state.values())
    # Servers with joined members before the join: ours and the remote (bob).
    assert sorted(answer["servers_in_room"]) == sorted([gw.server_name, remote.server_name])
    member = await gw.hs.events.state.get_membership(room_id, joiner)
    assert member is not None and member.membership == "join"


async def test_omit_members_in_a_named_room_and_servers_before_the_join(gw, remote, alice):
    rv = get_room_version("12")
    room_id, view = await public_room(gw, alice, remote, "12", name="Named")
    users = [await local_member(gw, room_id, f"u{i}") for i in range(1, 4)]
    joiner = f"@joiner:{remote.server_name}"
    join, answer = await remote.join_via(gw.server_name, room_id, joiner, omit_members=True)
    state = by_key(answer["state"], rv)
    assert answer["members_omitted"] is True
    assert not [k for k in state if k[0] == "m.room.member"]
    assert state[("m.room.name", "")] and ("m.room.power_levels", "") in state
    assert_auth_chains_complete(answer, join, rv)
    # The creator's member event is in the auth chain (it authorises the state events).
    chain = by_key(answer["auth_chain"], rv)
    assert ("m.room.member", alice.user_id) in chain
    assert not any(("m.room.member", u) in chain for u in users)
    # The joining server had nobody in the room before.
    assert answer["servers_in_room"] == [gw.server_name]


async def test_without_omit_members_everything_is_sent(gw, remote, alice):
    rv = get_room_version("12")
    room_id, bob, users = await room_with_members(gw, alice, remote, "12")
    full_state = await gw.hs.events.state.get_current_state_ids(room_id)
    joiner = f"@joiner:{remote.server_name}"
    for omit in (False, None):
        join, answer = await remote.join_via(gw.server_name, room_id, joiner, omit_members=omit)
        assert answer["members_omitted"] is False
        assert by_key(answer["state"], rv) == full_state  # (the second time: with the first join)
        assert_auth_chains_complete(answer, join, rv)
        full_state = await gw.hs.events.state.get_current_state_ids(room_id)


async def test_v1_send_join_ignores_omit_members(gw, remote, alice):
    rv = get_room_version("10")
    room_id, bob, users = await room_with_members(gw, alice, remote, "10")
    joiner = f"@joiner:{remote.server_name}"
    from federation.room_membership import event_from_template

    made = await remote.client.request(
        "GET", gw.server_name, f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(joiner, safe='')}",
        query=[("ver", "10")])
    event = event_from_template(made["event"], rv, membership="join", user_id=joiner, room_id=room_id,
                                server_name=remote.server_name, signing_key=remote.key, origin_server_ts=1)
    event_id = PDU.from_pdu_json(event, rv).event_id
    status, body = await remote.client.request(
        "PUT", gw.server_name, f"/_matrix/federation/v1/send_join/{quote(room_id, safe='')}/{quote(event_id, safe='')}",
        content=event, query={"omit_members": "true"})
    assert status == 200
    assert {(e["type"], e["state_key"]) for e in body["state"]} >= {("m.room.member", u) for u in users[:4]}


@pytest.mark.parametrize("version", ["1", "10"])
async def test_joins_and_leaves_that_are_not_the_origins_are_refused(gw, remote, alice, version):
    """A join or leave of another server's user, or one without hashes and signatures:
    400 M_INVALID_PARAM on v2 (the spec's SHOULD), 403 M_FORBIDDEN on v1 (its spec names
    no error; Synapse's answer); nothing stored. The origin's own signed join is taken."""
    from federation.net.client import FederationRequestError
    from federation.room_membership import event_from_template
    from tests.support.fake_remote import RoomView
    import time

    rv = get_room_version(version)
    room_id, _ = await public_room(gw, alice, remote, version)
    for kind in ("join", "leave"):
        # A template for the remote's own user, made to name one of ours.
        user = alice.user_id if kind == "leave" else f"@someone:{gw.server_name}"
        made = await remote.client.request(
            "GET", gw.server_name,
            f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(f'@joiner:{remote.server_name}', safe='')}",
            query={"ver": version})
        template = {**made["event"], "sender": user, "state_key": user, "content": {"membership": kind}}
        foreign = event_from_template(template, rv, membership=kind, user_id=user, room_id=room_id,
                                      server_name=remote.server_name, signing_key=remote.key,
                                      origin_server_ts=int(time.time() * 1000))
        unsigned = {k: v for k, v in foreign.items() if k not in ("hashes", "signatures")}
        for event in (foreign, unsigned):
            event_id = RoomView.event_id(event, rv) if "hashes" in event else "$x:" + remote.server_name
            for api, status, errcode in (("v1", 403, "M_FORBIDDEN"), ("v2", 400, "M_INVALID_PARAM")):
                with pytest.raises(FederationRequestError) as e:
                    await remote.client.request(
                        "PUT", gw.server_name,
                        f"/_matrix/federation/{api}/send_{kind}/{quote(room_id, safe='')}/{quote(event_id, safe='')}",
                        content=event)
                assert (e.value.status, e.value.body["errcode"]) == (status, errcode), (kind, api)
    assert (await gw.hs.events.state.get_membership(room_id, alice.user_id)).membership == "join"
    # The joining server's own user, signed: accepted on v1, with its [200, ...] wrapper.
    joiner = f"@joiner:{remote.server_name}"
    made = await remote.client.request(
        "GET", gw.server_name, f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(joiner, safe='')}",
        query={"ver": version})
    join = event_from_template(made["event"], rv, membership="join", user_id=joiner, room_id=room_id,
                               server_name=remote.server_name, signing_key=remote.key,
                               origin_server_ts=int(time.time() * 1000))
    answer = await remote.client.request(
        "PUT", gw.server_name, f"/_matrix/federation/v1/send_join/{quote(room_id, safe='')}/"
        f"{quote(RoomView.event_id(join, rv), safe='')}", content=join)
    assert answer[0] == 200 and "state" in answer[1]


async def test_a_join_with_values_the_room_version_forbids_is_bad_json(gw, remote, alice):
    """Rooms 6+ allow no floats in events: M_BAD_JSON."""
    import time

    from federation.net.client import FederationRequestError
    from federation.room_membership import event_from_template

    rv = get_room_version("10")
    room_id, _ = await public_room(gw, alice, remote, "10")
    joiner = f"@joiner:{remote.server_name}"
    made = await remote.client.request(
        "GET", gw.server_name, f"/_matrix/federation/v1/make_join/{quote(room_id, safe='')}/{quote(joiner, safe='')}",
        query={"ver": "10"})
    join = event_from_template(made["event"], rv, membership="join", user_id=joiner, room_id=room_id,
                               server_name=remote.server_name, signing_key=remote.key,
                               origin_server_ts=int(time.time() * 1000))
    join["content"]["bad_val"] = 1.1
    with pytest.raises(FederationRequestError) as e:
        await remote.client.request("PUT", gw.server_name, f"/_matrix/federation/v2/send_join/"
                                    f"{quote(room_id, safe='')}/$whatever", content=join)
    assert (e.value.status, e.value.body["errcode"]) == (400, "M_BAD_JSON")
    assert (await gw.hs.events.state.get_membership(room_id, joiner)) is None


async def test_answers_list_events_oldest_first(gw, remote, alice):
    """The power levels changed twice: in send_join's answer, state and auth chain are
    in depth order, so a server that applies them in the order given
    (as SyTest's does) ends with the room's newest power levels, the one its join and
    next events are authorised by, whatever the event IDs' order."""
    from gateway.services.events import EventSpec

    rv = get_room_version("10")
    room_id, _ = await public_room(gw, alice, remote, "10")
    for level in (60, 70):
        pl_id = (await gw.hs.events.state.get_current_state_ids(room_id))[("m.room.power_levels", "")]
        pl = dict((await gw.hs.events.get_pdus([pl_id]))[pl_id].content)
        await gw.hs.events.send_state_event(room_id, EventSpec("m.room.power_levels", alice.user_id,
                                                               {**pl, "state_default": level}, state_key=""))
    newest = (await gw.hs.events.state.get_current_state_ids(room_id))[("m.room.power_levels", "")]
    join, answer = await remote.join_via(gw.server_name, room_id, f"@joiner:{remote.server_name}")
    for events in (answer["auth_chain"], answer["state"]):
        depths = [e["depth"] for e in events]
        assert depths == sorted(depths)
    applied = by_key(answer["auth_chain"] + answer["state"], rv)
    assert applied[("m.room.power_levels", "")] == newest
