"""Inviting someone by e-mail address (third-party invites) through an identity server.

Spec: https://spec.matrix.org/latest/client-server-api/#third-party-invites and
https://spec.matrix.org/latest/server-server-api/#third-party-invites.

- ``POST /rooms/{roomId}/invite`` with ``id_server``, ``id_access_token``, ``medium`` and
  ``address``: the identity server looks the address up; a bound address is invited as its
  Matrix user; otherwise the identity server stores the invite and we send an
  ``m.room.third_party_invite`` event with the token and public keys it answered.
- ``/3pid/onbind`` (from the identity server, once someone binds the address): each pending
  invite becomes an ``m.room.member`` invite carrying the identity server's ``signed`` block.
  Its sender is the original inviter, so the inviter's server builds and signs it: we do when
  the inviter is ours, else we ask theirs with ``exchange_third_party_invite``.
- ``exchange_third_party_invite`` (as the inviter's server): check and send that invite; the
  room's auth rules check the identity server's signature against the keys of the
  ``m.room.third_party_invite`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from federation.signing import quote_path_segment
from federation.ids import get_domain_from_id, is_valid_user_id
from federation.auth_rules import verify_third_party_invite_signed
from federation.room_membership import MembershipError, check_exchanged_third_party_invite

from ..http import Codes, MatrixError
from .events import EventSpec
from .identity_servers import check_id_server

log = logging.getLogger(__name__)

EVENT_TYPE = "m.room.third_party_invite"
#: Room state passed to the identity server's store-invite (for its invitation mail).
_ROOM_DETAILS = {("m.room.canonical_alias", "alias"): "room_alias", ("m.room.avatar", "url"): "room_avatar_url",
                 ("m.room.join_rules", "join_rule"): "room_join_rules", ("m.room.name", "name"): "room_name",
                 ("m.room.create", "type"): "room_type"}


def is_third_party_invite(body: dict[str, Any]) -> bool:
    """Whether an ``/invite`` body invites by third-party identifier (not ``user_id``)."""
    return "user_id" not in body and any(k in body for k in ("medium", "address", "id_server"))


def parse_third_party_invite(body: Any) -> tuple[str, str, str, str]:
    """``id_server``, ``id_access_token``, ``medium`` and ``address`` of an invite by
    third-party identifier (the spec's ``Invite3pid``); e-mail addresses lower-cased."""
    if not isinstance(body, dict):
        raise MatrixError.bad_json("a third-party invite must be an object")
    id_server = check_id_server(body.get("id_server"))
    token, medium, address = body.get("id_access_token"), body.get("medium"), body.get("address")
    if not isinstance(token, str) or not token:
        raise MatrixError.missing_param("'id_access_token' is required with 'id_server'")
    if not isinstance(medium, str) or not medium or not isinstance(address, str) or not address:
        raise MatrixError.missing_param("'medium' and 'address' are required strings")
    if medium == "email":
        address = address.strip().lower()
    return id_server, token, medium, address


class ThirdPartyInvites:
    def __init__(self, *, server_name: str, identity_servers, events, rooms, profiles, users, federation_client,
                 is_resident: Callable, ratelimiter, modules):
        self.server_name = server_name
        self.identity_servers = identity_servers
        self.events = events
        self.rooms = rooms
        self.profiles = profiles
        self.users = users
        self.federation_client = federation_client
        self.is_resident = is_resident
        self.ratelimiter = ratelimiter
        self.modules = modules

    # --- inviting ------------------------------------------------------------------------

    async def invite(self, sender: str, room_id: str, body: dict[str, Any]) -> None:
        """``/invite`` by ``medium`` and ``address`` (also each of createRoom's ``invite_3pid``)."""
        id_server, token, medium, address = parse_third_party_invite(body)
        await self.events.get_room(room_id)
        self.ratelimiter.ratelimit(sender)
        await self.modules.spam_check("user_may_send_3pid_invite", "This invite", sender, medium, address, room_id)
        mxid = await self.identity_servers.lookup(id_server, token, medium, address)
        if mxid is not None:
            await self.rooms.invite(sender, room_id, mxid)
            return
        # Refused early if the sender may not send the event (not in the room, too low a
        # power level): the identity server then stores nothing.
        await self._check_may_send(room_id, sender)
        stored = await self.identity_servers.store_invite(id_server, token, {
            "medium": medium, "address": address, "room_id": room_id, "sender": sender,
            **await self._room_details(room_id, sender)})
        keys = [k for k in stored.get("public_keys") or [] if isinstance(k, dict) and isinstance(k.get("public_key"), str)]
        if not keys:
            raise MatrixError(502, Codes.UNKNOWN, f"{id_server} answered store-invite without public keys")
        content = {"display_name": stored["display_name"], "public_keys": keys,
                   "public_key": keys[0]["public_key"]}
        if isinstance(keys[0].get("key_validity_url"), str):
            content["key_validity_url"] = keys[0]["key_validity_url"]
        await self.events.send_event(room_id, EventSpec(EVENT_TYPE, sender, content, stored["token"]))

    async def _check_may_send(self, room_id: str, sender: str) -> None:
        member = await self.events.state.get_membership(room_id, sender)
        if member is None or member.membership != "join":
            raise MatrixError.forbidden(f"{sender} is not in {room_id}")

    async def _room_details(self, room_id: str, sender: str) -> dict[str, str]:
        current = await self.events.state.get_current_state_ids(room_id)
        pdus = await self.events.get_state_events({(t, ""): current[(t, "")] for (t, _) in _ROOM_DETAILS
                                                   if (t, "") in current})
        out = {}
        for (event_type, key), name in _ROOM_DETAILS.items():
            pdu = pdus.get((event_type, ""))
            if pdu is not None and isinstance(pdu.content.get(key), str):
                out[name] = pdu.content[key]
        profile = await self.profiles.get_member_profile(sender)
        if "displayname" in profile:
            out["sender_display_name"] = profile["displayname"]
        if "avatar_url" in profile:
            out["sender_avatar_url"] = profile["avatar_url"]
        return out

    # --- the address got bound ---------------------------------------------------------------

    async def on_bind(self, body: Any) -> None:
        """``/3pid/onbind``: turn each stored invite of the bound address into a membership.
        One invite failing does not stop the others (each failure is logged)."""
        if not isinstance(body, dict) or not isinstance(body.get("invites", []), list):
            raise MatrixError.bad_json("'invites' must be a list")
        mxid = body.get("mxid")
        if not isinstance(mxid, str) or not is_valid_user_id(mxid) or get_domain_from_id(mxid) != self.server_name:
            raise MatrixError.invalid_param("'mxid' must be a user of this server")
        failed: list[MatrixError] = []
        for invite in body.get("invites", []):
            try:
                await self._bound_invite(mxid, invite)
            except (MatrixError, MembershipError) as e:
                log.warning("third-party invite for %s not turned into an invite: %s", mxid, e)
                failed.append(e if isinstance(e, MatrixError) else MatrixError.forbidden(str(e)))
        if failed:
            # As Synapse answers: the identity server keeps the invites and may try again
            # (Sydent does); those already done are not done twice (on_exchange).
            raise failed[0]

    async def _bound_invite(self, mxid: str, invite: Any) -> None:
        if not isinstance(invite, dict):
            raise MatrixError.bad_json("an invite must be an object")
        room_id, sender, signed = invite.get("room_id"), invite.get("sender"), invite.get("signed")
        if not isinstance(room_id, str) or not isinstance(sender, str) or not is_valid_user_id(sender):
            raise MatrixError.bad_json("an invite needs 'room_id' and 'sender'")
        if not isinstance(signed, dict) or signed.get("mxid") != mxid:
            raise MatrixError.bad_json("the invite's 'signed' block is for another user")
        user = await self.users.get_user(mxid)
        if user is None or user.deactivated:
            raise MatrixError.not_found(f"Unknown user {mxid}")
        event = {"type": "m.room.member", "room_id": room_id, "sender": sender, "state_key": mxid,
                 "content": {"membership": "invite",
                             "third_party_invite": {"display_name": invite.get("address", ""), "signed": signed}}}
        inviter_server = get_domain_from_id(sender)
        if inviter_server == self.server_name:
            await self.on_exchange(self.server_name, room_id, event)
            return
        await self.federation_client.request(
            "PUT", inviter_server,
            f"/_matrix/federation/v1/exchange_third_party_invite/{quote_path_segment(room_id)}", content=event)

    # --- as the inviter's server ---------------------------------------------------------------

    async def on_exchange(self, origin: str, room_id: str, event: Any) -> None:
        """``exchange_third_party_invite``: send the invite, as its (our) sender, if the room's
        auth rules accept the identity server's signature."""
        try:
            content = check_exchanged_third_party_invite(event, room_id=room_id, origin=origin,
                                                         local_server=self.server_name)
        except MembershipError as e:
            raise MatrixError.bad_json(f"Invalid third-party invite: {e}") from None
        await self.events.get_room(room_id)
        if not await self.is_resident(room_id):
            raise MatrixError.forbidden(f"This server is not in {room_id}")
        token = content["third_party_invite"]["signed"]["token"]
        invite_id = await self.events.state.get_current_state_event_id(room_id, EVENT_TYPE, token)
        if invite_id is None:
            raise MatrixError.forbidden("No third-party invite in the room has this token")
        pdu = (await self.events.get_pdus([invite_id])).get(invite_id)
        if pdu is None:
            raise MatrixError.forbidden("No third-party invite in the room has this token")
        if await self._already_invited(room_id, event["state_key"], token):
            return  # done already (the identity server told us again)
        await self._check_key_still_valid(pdu.content, content["third_party_invite"]["signed"])
        # The display name the room's m.room.third_party_invite gave (not the requester's).
        if isinstance(pdu.content.get("display_name"), str):
            content["third_party_invite"]["display_name"] = pdu.content["display_name"]
        await self.rooms.send_invite_event(room_id, event["sender"], event["state_key"], content)

    async def _already_invited(self, room_id: str, user_id: str, token: str) -> bool:
        """Whether ``user_id`` is in the room, or invited by this third-party invite."""
        current = await self.events.state.get_membership(room_id, user_id)
        if current is None or current.membership not in ("invite", "join"):
            return False
        if current.membership == "join":
            return True
        member = (await self.events.get_pdus([current.event_id])).get(current.event_id)
        tpi = member.content.get("third_party_invite") if member is not None else None
        signed = tpi.get("signed") if isinstance(tpi, dict) else None
        return isinstance(signed, dict) and signed.get("token") == token

    async def _check_key_still_valid(self, invite: dict[str, Any], signed: dict[str, Any]) -> None:
        """The resident server "MUST validate that the public key used for signing is still
        valid" at the invite's ``key_validity_url``: 403 when no key that signed ``signed``
        is (revoked, or the identity server cannot be reached).
        https://spec.matrix.org/latest/client-server-api/#third-party-invites"""
        urls = {invite.get("public_key"): invite.get("key_validity_url")}
        for entry in invite.get("public_keys") or []:
            if isinstance(entry, dict):
                urls[entry.get("public_key")] = entry.get("key_validity_url")
        signing = [(k, u) for k, u in urls.items() if isinstance(k, str) and verify_third_party_invite_signed(signed, [k])]
        if not signing:
            raise MatrixError.forbidden("third-party invite: no signature matches the invite's public keys")
        if any(not isinstance(u, str) for _, u in signing):
            return  # a key without a URL to check it at
        for key, url in signing:
            if await self.identity_servers.key_is_valid(url, key):
                return
        raise MatrixError.forbidden("third-party invite: the identity server no longer vouches for its key")
