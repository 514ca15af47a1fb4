"""Relationships across servers: a Synapse user edits, replies in a thread, reacts,
references and redacts in a room shared with our user, and our server bundles and lists
those relations (also those of history it backfills); Synapse bundles our user's edit
the same way."""

from __future__ import annotations

import pytest
from yarl import URL

from tests.interop.test_federated_rooms_synapse import servers  # noqa: F401 (the fixture)
from tests.support.client_api import Client, has_text, member_event, q

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared servers fixture

_txn = iter(range(10**6))


async def send(client: Client, room: str, content: dict, type: str = "m.room.message") -> str:
    body = await client.call("PUT", f"/rooms/{q(room)}/send/{type}/rel{next(_txn)}", content)
    return body["event_id"]


async def v1(client: Client, path: str, **params) -> dict:
    url = URL(f"{client.base}/_matrix/client/v1{path}", encoded=True)
    async with client.s.get(url, params=params, headers={"Authorization": f"Bearer {client.token}"}) as r:
        body = await r.json()
        assert r.status == 200, body
        return body


def relations_of(ev: dict) -> dict:
    return ev.get("unsigned", {}).get("m.relations", {})


async def test_a_synapse_users_relations_are_bundled_here(servers):
    gw, synapse, alice, bob = servers
    room = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "name": "Shared"}))["room_id"]
    await bob.call("POST", f"/join/{q(room)}", {}, params={"server_name": gw.server_name})
    await alice.sync_until(member_event(room, bob.user_id, "join"))

    root = await alice.send_text(room, "alice's thread root")
    await bob.sync_until(has_text(room, "alice's thread root"))
    original = await bob.send_text(room, "bob's original")
    fixed = await send(bob, room, {"msgtype": "m.text", "body": "* bob's fixed",
                                   "m.new_content": {"msgtype": "m.text", "body": "bob's fixed"},
                                   "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    reply = await send(bob, room, {"msgtype": "m.text", "body": "bob in the thread",
                                   "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
    reaction = await send(bob, room, {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "🚀"}},
                          type="m.reaction")
    reference = await send(bob, room, {"msgtype": "m.text", "body": "see alice's",
                                       "m.relates_to": {"rel_type": "m.reference", "event_id": root}})
    await bob.send_text(room, "bob is done")
    await alice.sync_until(has_text(room, "bob is done"))

    ev = await alice.call("GET", f"/rooms/{q(room)}/event/{q(original)}")
    assert relations_of(ev)["m.replace"]["event_id"] == fixed
    assert relations_of(ev)["m.replace"]["content"]["m.new_content"]["body"] == "bob's fixed"
    ev = await alice.call("GET", f"/rooms/{q(room)}/event/{q(root)}")
    thread = relations_of(ev)["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == reply
    assert thread["latest_event"]["sender"] == bob.user_id and thread["current_user_participated"] is True
    assert relations_of(ev)["m.reference"] == {"chunk": [{"event_id": reference}]}
    body = await v1(alice, f"/rooms/{q(room)}/relations/{q(root)}")
    assert [e["event_id"] for e in body["chunk"]] == [reference, reaction, reply]
    body = await v1(alice, f"/rooms/{q(room)}/threads")
    assert [e["event_id"] for e in body["chunk"]] == [root]
    # Bob's reaction does not stop alice reacting the same; her second one is refused.
    await alice.call("PUT", f"/rooms/{q(room)}/send/m.reaction/dup1",
                     {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "🚀"}})
    await alice.call("PUT", f"/rooms/{q(room)}/send/m.reaction/dup2",
                     {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "🚀"}}, expect=400)

    # Bob redacts his reaction and reference: the relations go here too.
    for target in (reaction, reference):
        await bob.call("PUT", f"/rooms/{q(room)}/redact/{q(target)}/red{next(_txn)}", {})
    await bob.send_text(room, "bob redacted")
    await alice.sync_until(has_text(room, "bob redacted"))
    body = await v1(alice, f"/rooms/{q(room)}/relations/{q(root)}")
    assert reaction not in [e["event_id"] for e in body["chunk"]] and reply in [e["event_id"] for e in body["chunk"]]
    ev = await alice.call("GET", f"/rooms/{q(room)}/event/{q(root)}")
    assert "m.reference" not in relations_of(ev)

    # The other way: Synapse bundles our user's edit.
    mine = await alice.send_text(room, "alice's original")
    alice_fix = await send(alice, room, {"msgtype": "m.text", "body": "* alice's fixed",
                                         "m.new_content": {"msgtype": "m.text", "body": "alice's fixed"},
                                         "m.relates_to": {"rel_type": "m.replace", "event_id": mine}})
    await alice.send_text(room, "alice is done")
    await bob.sync_until(has_text(room, "alice is done"))
    ev = await bob.call("GET", f"/rooms/{q(room)}/event/{q(mine)}")
    assert relations_of(ev)["m.replace"]["event_id"] == alice_fix


    # History from before our user joined comes by backfill; its relations count too.
    old_room = (await bob.call("POST", "/createRoom", {"preset": "public_chat", "name": "History"}))["room_id"]
    old_root = await bob.send_text(old_room, "an old thread")
    old_replies = [await send(bob, old_room, {"msgtype": "m.text", "body": f"old reply {i}",
                                              "m.relates_to": {"rel_type": "m.thread", "event_id": old_root}})
                   for i in range(2)]
    old_fix = await send(bob, old_room, {"msgtype": "m.text", "body": "* an old thread, fixed",
                                         "m.new_content": {"msgtype": "m.text", "body": "an old thread, fixed"},
                                         "m.relates_to": {"rel_type": "m.replace", "event_id": old_root}})
    for i in range(10):
        await bob.send_text(old_room, f"filler {i}")
    await alice.call("POST", f"/join/{q(old_room)}", {}, params={"server_name": synapse.server_name})
    found: dict = {}
    token = None
    for _ in range(10):
        page = await alice.call("GET", f"/rooms/{q(old_room)}/messages",
                                params={"dir": "b", "limit": "10", **({"from": token} if token else {})})
        found.update({e["event_id"]: e for e in page["chunk"]})
        token = page.get("end")
        if old_root in found or token is None:
            break
    assert old_root in found, "backfill never reached the old thread"
    assert relations_of(found[old_root])["m.replace"]["event_id"] == old_fix
    assert relations_of(found[old_root])["m.thread"]["count"] == 2
    assert relations_of(found[old_root])["m.thread"]["latest_event"]["event_id"] == old_replies[1]
    body = await v1(alice, f"/rooms/{q(old_room)}/threads")
    assert [e["event_id"] for e in body["chunk"]] == [old_root]
