"""To-device messages for other servers survive a restart: stored with the request, sent
as m.direct_to_device by the federation sender, forgotten once the destination took
the transaction; a restart before that sends them again (same message_id, so the
receiver keeps one copy). Against a real fake peer over TLS, on both engines."""

from __future__ import annotations

from .conftest import make_user
from .test_federation_sender import ca, open_hs, peer, retry, trust  # noqa: F401 - fixtures

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
