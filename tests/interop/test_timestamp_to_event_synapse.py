"""/timestamp_to_event across our server and a real Synapse (one of each for the module):
a server that joined a room late asks the other (GET /_matrix/federation/v1/timestamp_to_event)
for history it does not hold, fetches the answer into its timeline (backfill), and both
servers then give the same event; both ways."""

from __future__ import annotations

import pytest
import pytest_asyncio
from yarl import URL

from tests.support.client_api import Client, member_event, q, register_user
from tests.support.synapse import SynapseServer, register_synapse_user, synapse_and_gateway, unique_localpart

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Env:
    gw: object
    synapse: SynapseServer
    alice: Client  # ours
    bob: Client    # Synapse's


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory, shared_synapse):
    e = Env()
    async with synapse_and_gateway(tmp_path_factory.mktemp("ts_synapse"), synapse=shared_synapse) \
            as (e.synapse, e.gw, s):
        e.alice = await register_user(s, e.gw.client_url, "alice")
        bob = unique_localpart("bob")
        e.bob = Client(s, e.synapse.client_url, await register_synapse_user(e.synapse, bob),
                       f"@{bob}:{e.synapse.server_name}")
        yield e


async def lookup(client: Client, room_id: str, ts: int, direction: str) -> dict:
    url = URL(f"{client.base}/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event", encoded=True)
    async with client.s.get(url, params={"ts": str(ts), "dir": direction},
                            headers={"Authorization": f"Bearer {client.token}"}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


async def history(owner: Client, room_id: str, count: int) -> list[tuple[str, int]]:
    """``count`` messages, with their timestamps as the owner's server stored them."""
    out = []
    for i in range(count):
        event_id = await owner.send_text(room_id, f"old {i}")
        event = await owner.call("GET", f"/rooms/{q(room_id)}/event/{q(event_id)}")
        out.append((event_id, event["origin_server_ts"]))
    return out


async def test_we_ask_synapse_for_history_before_our_join(env):
    room = (await env.bob.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"}))["room_id"]
    old = await history(env.bob, room, 30)
    await env.alice.call("POST", f"/join/{q(room)}", {}, params={"via": env.synapse.server_name})
    await env.alice.sync_until(member_event(room, env.alice.user_id, "join"))

    for ts, direction in ((0, "f"), (old[10][1], "f"), (old[20][1], "b")):
        theirs = await lookup(env.bob, room, ts, direction)
        ours = await lookup(env.alice, room, ts, direction)
        assert ours == theirs, (ts, direction)
    # Synapse answered our federation request (its access log says so).
    served = [line for line in env.synapse.log_path.read_text().splitlines()
              if "Processed request" in line and f"/_matrix/federation/v1/timestamp_to_event/{q(room)}" in line]
    assert served and all('200 "GET' in line for line in served)
    first = await lookup(env.alice, room, 0, "f")
    create = await env.alice.call("GET", f"/rooms/{q(room)}/event/{q(first['event_id'])}")
    assert create["type"] == "m.room.create"
    # The answer is in our timeline: clients can paginate from it.
    context = await env.alice.call("GET", f"/rooms/{q(room)}/context/{q(old[10][0])}", params={"limit": "4"})
    assert context["event"]["content"]["body"] == "old 10"
    assert [e["content"]["body"] for e in context["events_after"]] == ["old 11", "old 12"]


async def test_synapse_asks_us_for_history_before_its_join(env):
    room = (await env.alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"}))["room_id"]
    old = await history(env.alice, room, 30)
    await env.bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": env.gw.server_name})
    await env.bob.sync_until(member_event(room, env.bob.user_id, "join"))

    for ts, direction in ((0, "f"), (old[10][1], "f")):
        ours = await lookup(env.alice, room, ts, direction)
        theirs = await lookup(env.bob, room, ts, direction)
        assert theirs == ours, (ts, direction)
    assert (await lookup(env.bob, room, old[10][1], "f"))["event_id"] in {e for e, t in old if t == old[10][1]}
    # Synapse got its answer from us (its federation client's log says so).
    asked = [line for line in env.synapse.log_path.read_text().splitlines()
             if "Completed request: 200" in line and f"/_matrix/federation/v1/timestamp_to_event/{q(room)}" in line]
    assert asked
