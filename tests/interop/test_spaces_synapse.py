"""Spaces and room summaries across our server and a real Synapse (one of each for the
module): a Synapse user browses a space whose children live on our server (Synapse asks
our GET /hierarchy), our users browse a space on Synapse (we ask Synapse's), and each
sees every child the spec's rules let them see and none of the others; room summaries
of the other server's rooms both ways.

Children, on the server of the space: ``public``, ``invite`` (nobody of the browsing
server invited), ``invited`` (the browser invited), ``world_readable`` (invite only,
world-readable history), ``knock``, ``restricted`` (allowed by the space's members),
``restricted_elsewhere`` (allowed by a room the browser is not in), and a public
sub-space with a public room in it.
"""

from __future__ import annotations

import pytest
import pytest_asyncio
from yarl import URL

from tests.support.client_api import Client, invited_to, q, register_user
from tests.support.spaces import room_body
from tests.support.synapse import SynapseServer, register_synapse_user, synapse_and_gateway, unique_localpart

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: Who sees what: the browser is in the space; a stranger is not (and not invited).
SEEN_BY_MEMBER = {"space", "public", "invited", "world_readable", "knock", "restricted", "sub", "sub_public"}
SEEN_BY_STRANGER = {"space", "public", "world_readable", "knock", "sub", "sub_public"}


class Env:
    gw: object
    synapse: SynapseServer
    alice: Client  # ours: builds our space; browses Synapse's
    carol: Client  # ours: in nothing
    bob: Client    # Synapse's: builds its space; browses ours
    dave: Client   # Synapse's: in nothing


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, shared_synapse):
    e = Env()
    async with synapse_and_gateway(tmp_path_factory.mktemp("spaces_synapse"), synapse=shared_synapse) \
            as (e.synapse, e.gw, s):
        e.alice = await register_user(s, e.gw.client_url, "alice")
        e.carol = await register_user(s, e.gw.client_url, "carol")
        for name in ("bob", "dave"):
            localpart = unique_localpart(name)
            setattr(e, name, Client(s, e.synapse.client_url, await register_synapse_user(e.synapse, localpart),
                                    f"@{localpart}:{e.synapse.server_name}"))
        yield e


async def v1(client: Client, path: str, params=None, *, token: bool = True, expect: int = 200):
    headers = {"Authorization": f"Bearer {client.token}"} if token else {}
    url = URL(f"{client.base}/_matrix/client/v1{path}", encoded=True)
    async with client.s.get(url, params=params, headers=headers) as r:
        body = await r.json()
        assert r.status == expect, (path, r.status, body)
        return body


async def make_room(owner: Client, **kwargs) -> str:
    return (await owner.call("POST", "/createRoom", room_body(version="10", **kwargs)))["room_id"]


async def build_space(owner: Client, server_name: str, invitee: str) -> dict[str, str]:
    """The space and its children on ``owner``'s server; ``invitee`` is invited to the
    ``invited`` child. Returns room IDs by name."""
    rooms = {"space": await make_room(owner, space=True, name="Space")}
    outside = await make_room(owner, join_rule="invite")
    rooms.update({
        "public": await make_room(owner, name="Public"),
        "invite": await make_room(owner, join_rule="invite"),
        "invited": await make_room(owner, join_rule="invite", name="Invited"),
        "world_readable": await make_room(owner, join_rule="invite", history="world_readable"),
        "knock": await make_room(owner, join_rule="knock"),
        "restricted": await make_room(owner, join_rule="restricted", allow=[rooms["space"]]),
        "restricted_elsewhere": await make_room(owner, join_rule="restricted", allow=[outside]),
        "sub": await make_room(owner, space=True),
        "sub_public": await make_room(owner),
    })
    for i, name in enumerate(k for k in rooms if k not in ("space", "sub_public")):
        await owner.call("PUT", f"/rooms/{q(rooms['space'])}/state/m.space.child/{q(rooms[name])}",
                         {"via": [server_name], "order": f"{i:02d}"})
    await owner.call("PUT", f"/rooms/{q(rooms['sub'])}/state/m.space.child/{q(rooms['sub_public'])}",
                     {"via": [server_name]})
    await owner.call("POST", f"/rooms/{q(rooms['invited'])}/invite", {"user_id": invitee})
    return rooms


def seen(body: dict, rooms: dict[str, str]) -> set[str]:
    names = {v: k for k, v in rooms.items()}
    return {names.get(r["room_id"], r["room_id"]) for r in body["rooms"]}


async def test_synapse_users_browse_our_space(env):
    rooms = await build_space(env.alice, env.gw.server_name, env.bob.user_id)
    await env.bob.sync_until(invited_to(rooms["invited"]))
    await env.bob.call("POST", f"/join/{q(rooms['space'])}", {}, params={"server_name": env.gw.server_name})

    body = await v1(env.bob, f"/rooms/{q(rooms['space'])}/hierarchy")
    assert seen(body, rooms) == SEEN_BY_MEMBER
    assert body["rooms"][0]["room_id"] == rooms["space"]
    by_id = {r["room_id"]: r for r in body["rooms"]}
    assert by_id[rooms["public"]]["name"] == "Public" and by_id[rooms["invited"]]["name"] == "Invited"
    assert by_id[rooms["world_readable"]]["world_readable"] is True
    assert by_id[rooms["knock"]]["join_rule"] == "knock"
    # Dave (on Synapse, in nothing) sees the open rooms only.
    assert seen(await v1(env.dave, f"/rooms/{q(rooms['space'])}/hierarchy"), rooms) == SEEN_BY_STRANGER

    # Room summaries of our rooms, through Synapse.
    got = await v1(env.dave, f"/room_summary/{q(rooms['public'])}", {"via": env.gw.server_name})
    assert got["room_id"] == rooms["public"] and got["name"] == "Public" and got["membership"] == "leave"
    await v1(env.dave, f"/room_summary/{q(rooms['invite'])}", {"via": env.gw.server_name}, expect=404)
    got = await v1(env.bob, f"/room_summary/{q(rooms['invited'])}", {"via": env.gw.server_name})
    assert got["name"] == "Invited" and got["membership"] == "invite"


async def test_our_users_browse_a_space_on_synapse(env):
    rooms = await build_space(env.bob, env.synapse.server_name, env.alice.user_id)
    await env.alice.sync_until(invited_to(rooms["invited"]))
    await env.alice.call("POST", f"/join/{q(rooms['space'])}", {}, params={"via": env.synapse.server_name})

    body = await v1(env.alice, f"/rooms/{q(rooms['space'])}/hierarchy")
    assert seen(body, rooms) == SEEN_BY_MEMBER
    assert [r["room_id"] for r in body["rooms"]][:2] == [rooms["space"], rooms["public"]]
    by_id = {r["room_id"]: r for r in body["rooms"]}
    assert by_id[rooms["restricted"]]["allowed_room_ids"] == [rooms["space"]]
    assert by_id[rooms["invited"]]["name"] == "Invited"
    # Carol (ours, in nothing): the space is public, so she may browse it too (we are in
    # it); the rooms for members and invitees stay hidden.
    assert seen(await v1(env.carol, f"/rooms/{q(rooms['space'])}/hierarchy"), rooms) == SEEN_BY_STRANGER

    # A space we are not in at all: asked of Synapse from the start (its room ID names it).
    lone = await make_room(env.bob, space=True, name="Lone")
    await env.bob.call("PUT", f"/rooms/{q(lone)}/state/m.space.child/{q(rooms['public'])}",
                       {"via": [env.synapse.server_name]})
    await env.bob.call("PUT", f"/rooms/{q(lone)}/state/m.space.child/{q(rooms['invite'])}",
                       {"via": [env.synapse.server_name]})
    body = await v1(env.carol, f"/rooms/{q(lone)}/hierarchy")
    assert [r["room_id"] for r in body["rooms"]] == [lone, rooms["public"]]

    # Room summaries of Synapse's rooms.
    got = await v1(env.carol, f"/room_summary/{q(rooms['public'])}", {"via": env.synapse.server_name})
    assert got["name"] == "Public" and got["membership"] == "leave" and got["room_version"] == "10"
    got = await v1(env.alice, f"/room_summary/{q(rooms['invited'])}", {"via": env.synapse.server_name})
    assert got["membership"] == "invite"
    await v1(env.carol, f"/room_summary/{q(rooms['invited'])}", {"via": env.synapse.server_name}, expect=404)
    anonymous = await v1(env.carol, f"/room_summary/{q(lone)}", token=False)
    assert anonymous["name"] == "Lone" and "membership" not in anonymous
