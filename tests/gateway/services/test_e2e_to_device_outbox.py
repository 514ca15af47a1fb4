"""To-device messages for other servers survive a restart: stored with the request, sent
as m.direct_to_device by the federation sender, forgotten once the destination took
the transaction; a restart before that sends them again (same message_id, so the
receiver keeps one copy). Against a real fake peer over TLS, on both engines."""

from __future__ import annotations

from .conftest import make_user
from .federation.test_sender import ca, open_hs, peer, retry, trust  # noqa: F401 - fixtures

__all__ = ["ca", "open_hs", "peer", "retry"]


async def test_outbox_until_the_destination_takes_it(open_hs, peer):
    hs = await open_hs(start=False)  # stopped before the sender could send anything
    trust(peer, hs)
    alice = await make_user(hs, "alice")
    bob = f"@bob:{peer.server_name}"
    await hs.e2e_keys.send_to_device(alice, "ADEV", "m.room_key_request", "t1", {bob: {"BDEV": {"n": 1}}})
    stored = await hs.e2e_keys.store.get_federation_outbox()
    assert [(d, c["messages"]) for d, _, c in stored] == [(peer.server_name, {bob: {"BDEV": {"n": 1}}})]
    message_id = stored[0][1]
    await hs.close()

    # The restarted server sends it, and forgets it once the peer took it.
    hs = await open_hs(start=True)
    await peer.wait_for(lambda: any(e["edu_type"] == "m.direct_to_device" for e in peer.edus))
    sent = [e["content"] for e in peer.edus if e["edu_type"] == "m.direct_to_device"]
    assert sent == [{"sender": alice, "type": "m.room_key_request", "message_id": message_id,
                     "messages": {bob: {"BDEV": {"n": 1}}}}]
    assert not peer.errors
    # The hook runs in the destination's worker right after the transaction succeeded;
    # the worker ends when nothing is left to send.
    await hs.federation_sender._queues[peer.server_name].task
    assert await hs.e2e_keys.store.get_federation_outbox() == []
    await hs.close()


async def test_device_list_updates_are_kept_until_the_destination_takes_them(open_hs, peer):
    """A device list update made while no sender runs (a sender on a worker that is down)
    is kept, and sent by the sender when it starts."""
    from tests.support.federation_peer import remote_join

    from .federation.test_sender import new_room

    hs = await open_hs(start=False)
    trust(peer, hs)
    alice, room_id = await new_room(hs)
    await remote_join(hs, room_id, f"@bob:{peer.server_name}", peer)
    await hs.auth.devices.upsert_device(alice, "NEWDEV", "phone", 1)  # a new device: the list changed
    kept = await hs.e2e_keys.store.get_federation_outbox_edus()
    assert [(d, t, c["device_id"]) for d, _, t, c in kept] == [(peer.server_name, "m.device_list_update", "NEWDEV")]
    assert await hs.e2e_keys.store.get_federation_outbox() == []  # not a to-device message
    await hs.close()

    hs = await open_hs(start=True)
    await peer.wait_for(lambda: any(e["edu_type"] == "m.device_list_update" for e in peer.edus))
    (update,) = [e["content"] for e in peer.edus if e["edu_type"] == "m.device_list_update"]
    assert update["user_id"] == alice and update["device_id"] == "NEWDEV" and update["deleted"] is False
    await hs.federation_sender._queues[peer.server_name].task
    assert await hs.e2e_keys.store.get_federation_outbox_edus() == []
    assert not peer.errors
    await hs.close()
