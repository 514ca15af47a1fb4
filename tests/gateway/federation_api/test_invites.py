"""Invites of our users sent by another server (``PUT /invite``), on both database
engines, against a scripted remote: the invite is pushed to the invitee's push gateway
though the room is not on this server.

Spec: https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.gateway.client_api.test_push_rules import FakePushGateway, http_pusher
from tests.gateway.federation_api.test_transactions import alice, ca, gw, remote  # noqa: F401
from tests.support.fake_remote import RoomView, remote_room


def q(value: str) -> str:
    return quote(value, safe="")


def stripped(view: RoomView, *keys: tuple[str, str]) -> list[dict]:
    return [{"type": t, "state_key": k, "content": view.state[(t, k)].content, "sender": view.state[(t, k)].sender}
            for t, k in keys]


async def send_invite(remote, gw, view, event, room_state):  # noqa: F811
    event_id = RoomView.event_id(event, view.rv)
    return await remote.client.request(
        "PUT", gw.server_name, f"/_matrix/federation/v2/invite/{q(view.room_id)}/{q(event_id)}",
        content={"room_version": view.rv.identifier, "event": event, "invite_room_state": room_state})


@pytest.fixture
async def push_gateway():
    fake = FakePushGateway()
    app = web.Application()
    app.router.add_post("/_matrix/push/v1/notify", fake.handler)
    async with TestServer(app, host="127.0.0.1") as server:
        fake.url = str(server.make_url("/_matrix/push/v1/notify"))
        yield fake


async def test_an_invite_from_another_server_is_pushed(gw, remote, alice, push_gateway):  # noqa: F811
    await alice.call("POST", "/pushers/set", http_pusher(push_gateway.url))
    view, carol = remote_room(remote, "10")
    view.make("m.room.name", carol, {"name": "Elsewhere"}, state_key="")
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=alice.user_id)
    await send_invite(remote, gw, view, invite, stripped(view, ("m.room.name", ""), ("m.room.join_rules", "")))
    await gw.hs.push.flush_pushes()
    (pushed,) = [r["notification"] for r in push_gateway.received]
    assert pushed["event_id"] == RoomView.event_id(invite, view.rv) and pushed["room_id"] == view.room_id
    assert pushed["type"] == "m.room.member" and pushed["membership"] == "invite"
    assert pushed["sender"] == carol and pushed["user_is_target"] is True
    assert pushed["room_name"] == "Elsewhere"
    assert pushed["devices"][0]["tweaks"] == {"sound": "default"}


async def test_an_invite_the_user_muted_is_not_pushed(gw, remote, alice, push_gateway):  # noqa: F811
    await alice.call("POST", "/pushers/set", http_pusher(push_gateway.url))
    await alice.call("PUT", "/pushrules/global/override/.m.rule.invite_for_me/enabled", {"enabled": False})
    view, carol = remote_room(remote, "10")
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=alice.user_id)
    await send_invite(remote, gw, view, invite, [])
    await gw.hs.push.flush_pushes()
    assert push_gateway.received == []
    # The invite itself arrived.
    sync = await alice.call("GET", "/sync")
    assert view.room_id in sync["rooms"]["invite"]


async def test_an_invite_of_a_bridged_user_asks_the_bridge(tmp_path, database_config, ca, remote):  # noqa: F811
    """Another server invites a user of an application service's namespace that does not
    exist yet: the service is asked (``/_matrix/app/v1/users/{userId}``), makes the puppet,
    and the invite arrives; a user it does not make is unknown (404)."""
    import yaml

    from federation.net.client import FederationRequestError
    from tests.support.fake_appservice import fake_appservice
    from tests.support.fake_remote import local_gateway

    async with fake_appservice("hs-token") as bridge:
        reg = tmp_path / "bridge.yaml"
        reg.write_text(yaml.safe_dump({
            "id": "bridge", "url": bridge.url, "as_token": "as-token", "hs_token": "hs-token",
            "sender_localpart": "bridgebot", "namespaces": {"users": [{"exclusive": True, "regex": "@_b_.*"}]}}))
        async with local_gateway(tmp_path, database_config, ca, {"app_service_config_files": [str(reg)]}) as gw:
            puppet = f"@_b_puppet:{gw.server_name}"
            service = gw.hs.appservices.by_id("bridge")

            async def make_puppet(_request):
                await gw.hs.appservices.register_user(service, "_b_puppet")
                return 200, {}

            bridge.answers[f"/_matrix/app/v1/users/{puppet}"] = make_puppet
            view, carol = remote_room(remote, "10")
            invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=puppet)
            await send_invite(remote, gw, view, invite, [])
            assert await gw.hs.auth.users.get_user(puppet) is not None
            membership = await gw.hs.events.state.get_membership(view.room_id, puppet)
            assert membership is not None and membership.membership == "invite"
            stranger = f"@_b_stranger:{gw.server_name}"
            invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=stranger)
            with pytest.raises(FederationRequestError) as e:
                await send_invite(remote, gw, view, invite, [])
            assert e.value.status == 404
            asked = [r.path for r in bridge.requests]
            assert asked == [f"/_matrix/app/v1/users/{puppet}", f"/_matrix/app/v1/users/{stranger}"]
