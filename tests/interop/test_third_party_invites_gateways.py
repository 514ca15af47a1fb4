"""Third-party invites between two of our servers (gateway A on SQLite, gateway B on
PostgreSQL) and a small identity server of our own (HTTPS on loopback): alice on A invites
e-mail addresses; one already bound to bob on B is invited as bob; another is stored at the
identity server, and when carol on B binds it, the identity server calls B's ``/3pid/onbind``,
B (not in the room) asks A with ``exchange_third_party_invite``, A sends the invite (B
co-signs it) and carol joins.

Spec: https://spec.matrix.org/latest/server-server-api/#third-party-invites
"""

from __future__ import annotations

import ssl

import pytest

from tests.interop.test_federated_rooms_gateways import gateways, gateways_ca  # noqa: F401
from tests.support.client_api import invited_to, member_event, q
from tests.support.identity_server import ACCESS_TOKEN, start_identity_server


@pytest.fixture
async def identity(gateways_ca):  # noqa: F811
    server, runner = await start_identity_server(gateways_ca)
    server.onbind_ssl = ssl.create_default_context(cafile=str(gateways_ca.ca_path))
    yield server
    await runner.cleanup()


async def test_invites_by_address_across_servers(gateways, identity):  # noqa: F811
    a, b, alice, bob, carol = gateways
    room = (await alice.call("POST", "/createRoom", {"preset": "private_chat", "name": "Letters"}))["room_id"]

    def invite(address: str):
        return alice.call("POST", f"/rooms/{q(room)}/invite", {
            "id_server": identity.name, "id_access_token": ACCESS_TOKEN, "medium": "email", "address": address})

    # Bound already: an ordinary invite of bob, over federation.
    identity.bindings[("email", "bob@example.org")] = bob.user_id
    assert await invite("bob@example.org") == {}
    await bob.sync_until(invited_to(room))

    # Not bound: stored at the identity server, announced in the room.
    assert await invite("carol@example.org") == {}
    (stored,) = identity.invites
    tpi = await alice.call("GET", f"/rooms/{q(room)}/state/m.room.third_party_invite/{q(stored['token'])}")
    assert tpi["public_key"] == identity.public_key

    # Carol binds it: B hears of it, A (the inviter's server) sends the invite.
    identity.onbind_urls[b.server_name] = b.federation_url
    await identity.bind("email", "carol@example.org", carol.user_id)
    assert identity.onbind_answers == [200]
    invited = await carol.sync_until(invited_to(room))
    mine = [e for e in invited["invite_state"]["events"] if e["type"] == "m.room.member"
            and e["state_key"] == carol.user_id]
    assert mine and mine[0]["content"]["third_party_invite"]["signed"]["token"] == stored["token"]
    member = await alice.sync_until(member_event(room, carol.user_id, "invite"))
    assert member["sender"] == alice.user_id
    assert member["content"]["third_party_invite"]["display_name"] == tpi["display_name"]
    await carol.call("POST", f"/join/{q(room)}", {})
    await alice.sync_until(member_event(room, carol.user_id, "join"))
