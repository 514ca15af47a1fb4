"""Room upgrades between our server and a real Synapse (one of each for the module), both
ways:

- our user upgrades a room a Synapse user is in: Synapse sees the tombstone, follows it
  into the new room (joining through us, no invite: the room is public), and the old
  room's restricted levels hold there too;
- a Synapse user upgrades a room our user is in: our user follows the tombstone, and on
  joining the new room (our server's first join of it) her tags, push rules and
  ``m.direct`` come along, and our local alias of the old room moves to the new one.
"""

from __future__ import annotations

import itertools

import aiohttp
import pytest
import pytest_asyncio

from tests.support.client_api import Client, has_text, member_event, q
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer, register_synapse_user, unique_localpart

pytestmark = pytest.mark.asyncio(loop_scope="module")

_names = itertools.count()


class Env:
    gw: object
    synapse: SynapseServer
    session: aiohttp.ClientSession

    async def gateway_user(self) -> Client:
        name = f"g{next(_names)}"
        async with self.session.post(f"{self.gw.client_url}/_matrix/client/v3/register", json={
                "username": name, "password": "gateway-pass", "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
            assert r.status == 200, body
        user = Client(self.session, self.gw.client_url, body["access_token"], body["user_id"])
        await user.sync_until(lambda b: True)
        return user

    async def synapse_user(self) -> Client:
        name = unique_localpart(f"s{next(_names)}")  # the Synapse is shared with other modules
        user = Client(self.session, self.synapse.client_url, await register_synapse_user(self.synapse, name),
                      f"@{name}:{self.synapse.server_name}")
        await user.sync_until(lambda b: True)
        return user


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, shared_synapse):
    e = Env()
    tmp = tmp_path_factory.mktemp("upgrades_synapse")
    e.synapse = shared_synapse
    ca = e.synapse.ca
    extra = {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"],
             "enable_registration": True, "enable_registration_without_verification": True, "bcrypt_rounds": 4}
    async with running_gateway(tmp, ca, extra) as gw, aiohttp.ClientSession() as session:
        e.gw, e.session = gw, session
        yield e


def state_event(room_id: str, event_type: str):
    def get(body: dict):
        room = body.get("rooms", {}).get("join", {}).get(room_id, {})
        for e in room.get("timeline", {}).get("events", []) + room.get("state", {}).get("events", []):
            if e["type"] == event_type:
                return e
        return None
    return get


async def test_synapse_member_follows_our_upgrade(env):
    alice, bob = await env.gateway_user(), await env.synapse_user()
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Old hall",
                                                     "room_version": "10"}))["room_id"]
    await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": env.gw.server_name})
    await alice.sync_until(member_event(room, bob.user_id, "join"))

    new = (await alice.call("POST", f"/rooms/{q(room)}/upgrade", {"new_version": "12"}))["replacement_room"]
    # Synapse takes the tombstone and the restricted levels of the old room.
    tombstone = await bob.sync_until(state_event(room, "m.room.tombstone"))
    assert tombstone["content"]["replacement_room"] == new and tombstone["sender"] == alice.user_id
    await bob.sync_until(lambda b: (state_event(room, "m.room.power_levels")(b) or {}).get("content", {})
                         .get("events_default") == 50)
    levels = await bob.call("GET", f"/rooms/{q(room)}/state/m.room.power_levels")
    assert levels["events_default"] == 50 and levels["invite"] == 50
    refused = await bob.call("PUT", f"/rooms/{q(room)}/send/m.room.message/late",
                             {"msgtype": "m.text", "body": "too late"}, expect=403)
    assert refused["errcode"] == "M_FORBIDDEN"

    # Bob follows it, through the tombstone's sender's server as the spec says clients do.
    await bob.call("POST", f"/join/{q(new)}", {}, params={"via": env.gw.server_name})
    await alice.sync_until(member_event(new, bob.user_id, "join"))
    create = await bob.call("GET", f"/rooms/{q(new)}/state/m.room.create")
    assert create["room_version"] == "12" and create["predecessor"] == {"room_id": room}
    assert (await bob.call("GET", f"/rooms/{q(new)}/state/m.room.name")) == {"name": "Old hall"}
    await bob.send_text(new, "made it")
    await alice.sync_until(has_text(new, "made it"))
    await alice.send_text(new, "welcome over")
    await bob.sync_until(has_text(new, "welcome over"))


async def test_our_member_follows_a_synapse_upgrade(env):
    alice, bob = await env.gateway_user(), await env.synapse_user()
    room = (await bob.call("POST", "/createRoom", {"preset": "public_chat", "name": "Their hall"}))["room_id"]
    await alice.call("POST", f"/join/{q(room)}", {}, params={"server_name": env.synapse.server_name})
    await bob.sync_until(member_event(room, alice.user_id, "join"))
    # Alice's settings for the room, and an alias of ours pointing at it.
    me = q(alice.user_id)
    await alice.call("PUT", f"/user/{me}/rooms/{q(room)}/tags/m.favourite", {"order": 0.25})
    await alice.call("PUT", f"/pushrules/global/room/{q(room)}", {"actions": ["notify"]})
    await alice.call("PUT", f"/user/{me}/account_data/m.direct", {bob.user_id: [room]})
    alias = f"#their-hall:{env.gw.server_name}"
    await alice.call("PUT", f"/directory/room/{q(alias)}", {"room_id": room})

    new = (await bob.call("POST", f"/rooms/{q(room)}/upgrade", {"new_version": "12"}))["replacement_room"]
    tombstone = await alice.sync_until(state_event(room, "m.room.tombstone"))
    assert tombstone["content"]["replacement_room"] == new
    # Nothing moved before our server knew the new room.
    assert (await alice.call("GET", f"/directory/room/{q(alias)}"))["room_id"] == room

    await alice.call("POST", f"/join/{q(new)}", {}, params={"via": env.synapse.server_name})
    await bob.sync_until(member_event(new, alice.user_id, "join"))
    create = await alice.call("GET", f"/rooms/{q(new)}/state/m.room.create")
    assert create["predecessor"]["room_id"] == room
    assert await alice.call("GET", f"/user/{me}/rooms/{q(new)}/tags") == {"tags": {"m.favourite": {"order": 0.25}}}
    assert (await alice.call("GET", f"/pushrules/global/room/{q(new)}"))["actions"] == ["notify"]
    assert await alice.call("GET", f"/user/{me}/account_data/m.direct") == {bob.user_id: [room, new]}
    assert (await alice.call("GET", f"/directory/room/{q(alias)}"))["room_id"] == new
    await alice.send_text(new, "following you")
    await bob.sync_until(has_text(new, "following you"))
