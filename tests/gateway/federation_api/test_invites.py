"""Invites across servers, on both database engines, against a scripted remote: invites
of our users (``PUT /invite`` v2 and v1; pushed to the invitee's push gateway though the
room is not on this server; the server ACL before anything else), and ours of a remote
user (falling back to v1 for a server without v2, a bad answer refused).

Spec: https://spec.matrix.org/latest/server-server-api/#inviting-to-a-room
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from federation.net.client import FederationRequestError
from federation.room_versions import get_room_version
from federation.signing import sign_event
from tests.gateway.client_api.test_push_rules import FakePushGateway, http_pusher
from tests.gateway.federation_api.test_transactions import alice, ca, gw, remote, sync_view  # noqa: F401
from tests.support.fake_remote import FakeRemote, RoomView, remote_room


def q(value: str) -> str:
    return quote(value, safe="")


async def refused(user, method: str, path: str, body: dict, status: int) -> dict:
    """A client request that must fail with ``status``; its error."""
    async with user.session.request(method, user.gw.url + "/_matrix/client/v3" + path, json=body, ssl=user.gw.ssl,
                                    headers={"Authorization": f"Bearer {user.token}"}) as r:
        data = await r.json()
        assert r.status == status, (path, data)
        return data


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
    and the invite arrives; a user it does not make is invited all the same."""
    import yaml

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
            await send_invite(remote, gw, view, invite, [])  # not made, still invited (as on Synapse)
            assert await gw.hs.auth.users.get_user(stranger) is None
            asked = [r.path for r in bridge.requests]
            assert asked == [f"/_matrix/app/v1/users/{puppet}", f"/_matrix/app/v1/users/{stranger}"]


async def test_an_invite_of_a_user_who_does_not_exist_is_taken(gw, remote, alice):  # noqa: F811
    """An invite of a local user who does not exist is signed and kept, as Synapse does
    (the spec names no error for it, and a 404 would read as "no v2 invites"); one of
    a deactivated user is refused with 403."""
    view, carol = remote_room(remote, "10")
    nobody = f"@nobody:{gw.server_name}"
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=nobody)
    answer = await send_invite(remote, gw, view, invite, [])
    assert gw.server_name in answer["event"]["signatures"]
    membership = await gw.hs.events.state.get_membership(view.room_id, nobody)
    assert membership is not None and membership.membership == "invite"
    await gw.hs.auth.deactivate_account(alice.user_id)
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=alice.user_id)
    with pytest.raises(FederationRequestError) as e:
        await send_invite(remote, gw, view, invite, [])
    assert e.value.status == 403 and e.value.body["errcode"] == "M_FORBIDDEN"


async def test_v1_invites_are_served(gw, remote, alice):  # noqa: F811
    """``PUT /v1/invite``: the event itself (stripped state in its unsigned), for rooms 1
    and 2; the answer wrapped in ``[200, ...]``."""
    view, carol = remote_room(remote, "1")
    view.make("m.room.name", carol, {"name": "Old times"}, state_key="")
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=alice.user_id)
    event_id = RoomView.event_id(invite, view.rv)
    body = {**invite, "unsigned": {"invite_room_state": stripped(view, ("m.room.name", ""))}}
    answer = await remote.client.request("PUT", gw.server_name, f"/_matrix/federation/v1/invite/"
                                         f"{q(view.room_id)}/{q(event_id)}", content=body)
    assert answer[0] == 200
    signed = answer[1]["event"]
    assert signed["event_id"] == event_id and gw.server_name in signed["signatures"]
    sync = await alice.call("GET", "/sync")
    room = sync["rooms"]["invite"][view.room_id]
    assert {"type": "m.room.name", "state_key": "", "content": {"name": "Old times"}, "sender": carol} \
        in room["invite_state"]["events"]
    # Not signed by its sender's server: refused.
    unsigned = view.make("m.room.member", carol, {"membership": "invite", "again": True}, state_key=alice.user_id)
    bad = {**unsigned, "signatures": {}}
    with pytest.raises(FederationRequestError) as e:
        await remote.client.request("PUT", gw.server_name, f"/_matrix/federation/v1/invite/{q(view.room_id)}/"
                                    f"{q(RoomView.event_id(unsigned, view.rv))}", content=bad)
    assert e.value.status == 403


class OldInvitee:
    """A remote server without v2 invites (404 there) that co-signs v1 invites, or one
    that sends back a v2 invite with a float (not valid in rooms 6+)."""

    def __init__(self, remote):
        self.remote, self.v1 = remote, []
        remote.extra_routes += [("PUT", "/_matrix/federation/v1/invite/{room_id}/{event_id}", self.invite_v1),
                                ("PUT", "/_matrix/federation/v2/invite/{room_id}/{event_id}", self.invite_v2)]
        self.v2_answer = None

    async def invite_v1(self, request):
        event = await request.json()
        self.v1.append(event)
        event = {k: v for k, v in event.items() if k != "unsigned"}
        return web.json_response([200, {"event": sign_event(event, self.remote.server_name, self.remote.key,
                                                            room_version=get_room_version("2"))}])

    async def invite_v2(self, request):
        if self.v2_answer is None:
            return web.Response(status=404)
        body = await request.json()
        event = {**body["event"], "bad_val": 1.1}
        return web.json_response({"event": sign_event(event, self.remote.server_name, self.remote.key,
                                                      room_version=get_room_version(body["room_version"]))})


@pytest.fixture
async def old_invitee(ca):  # noqa: F811
    remote = FakeRemote(ca)
    fake = OldInvitee(remote)
    async with remote:
        yield fake


async def test_an_invite_falls_back_to_v1_for_servers_without_v2(gw, old_invitee, alice):  # noqa: F811
    remote = old_invitee.remote
    bob = f"@bob:{remote.server_name}"
    old_room = (await alice.call("POST", "/createRoom", {"room_version": "2", "name": "Old"}))["room_id"]
    await alice.call("POST", f"/rooms/{q(old_room)}/invite", {"user_id": bob})
    (sent,) = old_invitee.v1
    assert sent["state_key"] == bob and sent["content"]["membership"] == "invite"
    assert any(e["type"] == "m.room.name" for e in sent["unsigned"]["invite_room_state"])
    member = await alice.call("GET", f"/rooms/{q(old_room)}/state/m.room.member/{q(bob)}")
    assert member["membership"] == "invite"
    # A room whose events v1 invites cannot carry: refused, nothing sent.
    new_room = (await alice.call("POST", "/createRoom", {"room_version": "10"}))["room_id"]
    err = await refused(alice, "POST", f"/rooms/{q(new_room)}/invite", {"user_id": bob}, 400)
    assert err["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION" and len(old_invitee.v1) == 1
    # An invite sent back with a value rooms 6+ do not allow: M_BAD_JSON, no invite.
    old_invitee.v2_answer = "float"
    err = await refused(alice, "POST", f"/rooms/{q(new_room)}/invite", {"user_id": bob}, 400)
    assert err["errcode"] == "M_BAD_JSON"
    await refused(alice, "GET", f"/rooms/{q(new_room)}/state/m.room.member/{q(bob)}", None, 404)


async def test_a_denied_server_learns_nothing_from_an_invite(gw, remote, alice):  # noqa: F811
    """The server ACL is checked before anything else: a denied server cannot even tell
    whether the user it invites exists."""
    room_id = (await alice.call("POST", "/createRoom", {"preset": "public_chat", "room_version": "10"}))["room_id"]
    await alice.call("PUT", f"/rooms/{q(room_id)}/state/m.room.server_acl",
                     {"allow": ["*"], "deny": ["127.0.0.1"]})  # ports are not compared
    view = RoomView(remote, get_room_version("10"), room_id)
    await sync_view(gw, view)
    carol = f"@carol:{remote.server_name}"
    for target in (f"@nobody:{gw.server_name}", alice.user_id):
        invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=target, advance=False)
        with pytest.raises(FederationRequestError) as e:
            await send_invite(remote, gw, view, invite, [])
        assert e.value.status == 403 and e.value.body["errcode"] == "M_FORBIDDEN"


async def test_an_invite_rejected_while_its_server_is_unreachable(gw, remote, alice):  # noqa: F811
    """The room's server does not take the rejection (here: it serves no make_leave): the
    rejection is made here, and /sync shows the room left, with that leave event."""
    view, carol = remote_room(remote, "10")
    invite = view.make("m.room.member", carol, {"membership": "invite"}, state_key=alice.user_id)
    await send_invite(remote, gw, view, invite, [])
    since = (await alice.call("GET", "/sync"))["next_batch"]
    await alice.call("POST", f"/rooms/{q(view.room_id)}/leave", {})
    sync = await alice.call("GET", f"/sync?since={since}")
    (leave,) = sync["rooms"]["leave"][view.room_id]["timeline"]["events"]
    assert leave["type"] == "m.room.member" and leave["state_key"] == alice.user_id
    assert leave["sender"] == alice.user_id and leave["content"]["membership"] == "leave"
