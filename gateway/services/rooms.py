"""Creating rooms and changing memberships (local rooms).

Spec:
- createRoom: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3createroom
- memberships: https://spec.matrix.org/latest/client-server-api/#room-membership
- room v12 creators: https://spec.matrix.org/latest/rooms/v12/
- stripped state for invites:
  https://spec.matrix.org/latest/client-server-api/#stripped-state
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Mapping, Sequence
import logging
from typing import Any

from federation.ids import is_valid_user_id
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

from ..config.directory import rules_allow
from ..http import Codes, MatrixError
from .directory import parse_alias
from ..storage.profiles import ProfileStore
from ..storage.users import UserStore
from .events import EventSpec, SentEvent
from .third_party_invites import parse_third_party_invite

log = logging.getLogger(__name__)

PRESETS = ("private_chat", "public_chat", "trusted_private_chat")

#: Power level of the creator (rooms 1-11) and of trusted_private_chat invitees.
CREATOR_LEVEL = 100

#: Events whose state clients get in an invite (the create event first, as v12 wants).
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


def _preset_state(preset: str) -> dict[tuple[str, str], dict[str, Any]]:
    public = preset == "public_chat"
    state = {
        ("m.room.join_rules", ""): {"join_rule": "public" if public else "invite"},
        ("m.room.history_visibility", ""): {"history_visibility": "shared"},
    }
    if not public:
        # public_chat forbids guests: no event says so (absent means "forbidden"), as from Synapse.
        state[("m.room.guest_access", "")] = {"guest_access": "can_join"}
    return state


def default_power_levels(
    rv: RoomVersion, creator: str, preset: str, invitees: Sequence[str]
) -> dict[str, Any]:
    """The power levels a new room starts with (before ``power_level_content_override``).

    Rooms 12+: creators have unlimited power and must not be listed in ``users``; the
    tombstone level is above ``state_default`` so that upgrading stays with creators
    and admins (150 as deployed servers do).
    """
    users: dict[str, int] = {}
    if not rv.privileged_creators:
        users[creator] = CREATOR_LEVEL
        if preset == "trusted_private_chat":
            for u in invitees:
                users[u] = CREATOR_LEVEL
    return {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if rv.privileged_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "notifications": {"room": 50},
    }


def random_room_id(server_name: str) -> str:
    opaque = "".join(secrets.choice(string.ascii_letters) for _ in range(18))
    return f"!{opaque}:{server_name}"


class RoomsService:
    def __init__(self, hs):
        self.hs = hs
        self.events = hs.events
        self.profiles = ProfileStore(hs.db)
        self.users = UserStore(hs.db)

    # --- createRoom ------------------------------------------------------------

    async def create_room(self, user_id: str, body: Mapping[str, Any], *, requester: Any = None,
                          is_admin: bool = False) -> str:
        """Create a room as ``user_id`` from a createRoom request body; returns its ID.
        Modules may refuse (``user_may_create_room``) or change the request (``on_create_room``)."""
        modules = self.hs.modules.callbacks
        await modules.spam_check("user_may_create_room", "Creating a room", user_id)
        if modules.has("on_create_room"):
            body = copy.deepcopy(dict(body))
            await modules.raising("on_create_room", requester, body, is_admin)
        version_id = body.get("room_version", self.hs.config.default_room_version)
        if not isinstance(version_id, str):  # e.g. 10 for "10": a malformed request
            raise MatrixError.bad_json("'room_version' must be a string")
        if version_id not in KNOWN_ROOM_VERSIONS:
            raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION, f"Room version {version_id!r} is not supported")
        rv = get_room_version(version_id)
        visibility = body.get("visibility", "private")
        if visibility not in ("public", "private"):
            raise MatrixError.bad_json("'visibility' must be 'public' or 'private'")
        preset = body.get("preset", "public_chat" if visibility == "public" else "private_chat")
        if preset not in PRESETS:
            raise MatrixError.bad_json(f"'preset' must be one of {', '.join(PRESETS)}")
        invitees = body.get("invite", [])
        if not isinstance(invitees, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in invitees):
            raise MatrixError.bad_json("'invite' must be a list of user IDs")
        invitees = list(dict.fromkeys(u for u in invitees if u != user_id))
        for u in invitees:
            await self._check_invitee(u)
        invites_3pid = body.get("invite_3pid", [])
        if not isinstance(invites_3pid, list):
            raise MatrixError.bad_json("'invite_3pid' must be a list")
        for item in invites_3pid:  # checked before the room exists
            parse_third_party_invite(item)
        creation_content = _object(body, "creation_content")
        pl_override = _object(body, "power_level_content_override")
        initial_state = body.get("initial_state", [])
        if not isinstance(initial_state, list):
            raise MatrixError.bad_json("'initial_state' must be a list")
        for key in ("name", "topic"):
            if key in body and not isinstance(body[key], str):
                raise MatrixError.bad_json(f"'{key}' must be a string")
        is_direct = body.get("is_direct", False)
        if not isinstance(is_direct, bool):
            raise MatrixError.bad_json("'is_direct' must be a boolean")

        alias = await self._new_room_alias(user_id, body)
        # As Synapse does: a room that room_list_publication_rules keep out of the
        # directory is still created, unpublished.
        publish = visibility == "public" and self.hs.directory.may_publish(user_id, None, [alias] if alias else [])
        create_content: dict[str, Any] = {k: v for k, v in creation_content.items() if k != "room_version"}
        create_content["room_version"] = rv.identifier
        if not rv.implicit_room_creator:
            create_content["creator"] = user_id
        else:
            create_content.pop("creator", None)
        if rv.privileged_creators and preset == "trusted_private_chat" and invitees:
            extra = create_content.get("additional_creators", [])
            if not isinstance(extra, list):
                raise MatrixError.bad_json("'creation_content.additional_creators' must be a list")
            create_content["additional_creators"] = list(dict.fromkeys([*extra, *invitees]))

        specs = [
            EventSpec("m.room.create", user_id, create_content, ""),
            EventSpec("m.room.member", user_id, await self._join_content(user_id), user_id),
        ]
        state: dict[tuple[str, str], dict[str, Any]] = {}
        power_levels = default_power_levels(rv, user_id, preset, invitees)
        power_levels.update(pl_override)
        state[("m.room.power_levels", "")] = power_levels
        state.update(_preset_state(preset))
        if alias is not None:
            state[("m.room.canonical_alias", "")] = {"alias": alias}
        for item in initial_state:
            if not isinstance(item, dict) or not isinstance(item.get("type"), str) \
                    or not isinstance(item.get("content"), dict) or not isinstance(item.get("state_key", ""), str):
                raise MatrixError.bad_json("each 'initial_state' entry needs a 'type', a 'content' object"
                                           " and an optional string 'state_key'")
            if item["type"] in ("m.room.create", "m.room.member"):
                raise MatrixError.bad_json(f"'initial_state' may not contain {item['type']} events")
            state[(item["type"], item.get("state_key", ""))] = item["content"]
        if "name" in body:
            state[("m.room.name", "")] = {"name": body["name"]}
        if "topic" in body:
            state[("m.room.topic", "")] = {"topic": body["topic"]}
        # The power levels go first so that the creator may send the rest.
        specs.append(EventSpec("m.room.power_levels", user_id, state.pop(("m.room.power_levels", "")), ""))
        specs += [EventSpec(t, user_id, c, sk) for (t, sk), c in state.items()]

        room_id = None if rv.room_id_from_create_event else random_room_id(self.hs.server_name)
        room_id, sent = await self.events.create_room(rv, specs, creator=user_id, is_public=publish,
                                                      room_id=room_id)
        if alias is not None:
            await self.hs.directory.create_room_alias(alias, room_id, user_id)
        for invitee in invitees:
            try:
                await modules.spam_check("user_may_invite", "This invite", user_id, invitee, room_id)
            except MatrixError as e:
                log.info("not inviting %s into new room %s: %s", invitee, room_id, e.error)
                continue
            content: dict[str, Any] = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            await self._send_invite(room_id, user_id, invitee, content)
        for item in invites_3pid:  # as /invite by address: a bound one invites its user
            await self.hs.third_party_invites.invite(user_id, room_id, item)
        return room_id

    async def _new_room_alias(self, user_id: str, body: Mapping[str, Any]) -> str | None:
        """createRoom's ``room_alias_name`` as a full alias, checked to be free (M_ROOM_IN_USE)
        and allowed (``alias_creation_rules``) before the room is created."""
        name = body.get("room_alias_name")
        if name is None:
            return None
        if not isinstance(name, str) or not name or ":" in name or "#" in name:
            raise MatrixError.invalid_param("'room_alias_name' must be the local part of an alias (no ':' or '#')")
        alias = f"#{name}:{self.hs.server_name}"
        parse_alias(alias)
        if not rules_allow(self.hs.config.directory.alias_creation_rules, user_id, None, [alias]):
            raise MatrixError.forbidden("This server does not allow you to create this alias")
        await self.hs.directory.check_alias_available(alias)
        return alias

    # --- memberships -----------------------------------------------------------

    async def join(self, user_id: str, room_id: str, *, by_admin: bool = False,
                   servers: Sequence[str] = (), ratelimit: bool = False,
                   extra_content: Mapping[str, Any] | None = None) -> SentEvent | None:
        """Join a room: locally if this server takes part in it, else over federation
        through ``servers`` (the client's ``via``, the alias's servers), the inviter's
        server and the room ID's server. Returns the local event (None after a remote
        join). ``extra_content``: what the client's request body adds to the join event
        (a ``reason``, its own keys); the membership and the user's profile are the
        server's. Joining again with the same content makes no new event. A room that
        replaced another (an upgrade) brings the user's settings along
        (gateway/services/room_upgrades.py)."""
        sent = await self._join(user_id, room_id, by_admin=by_admin, servers=servers, ratelimit=ratelimit,
                                extra_content=extra_content or {})
        await self.hs.room_upgrades.on_joined(user_id, room_id, remote_join=sent is None)
        return sent

    async def _join(self, user_id: str, room_id: str, *, by_admin: bool, servers: Sequence[str],
                    ratelimit: bool, extra_content: Mapping[str, Any]) -> SentEvent | None:
        await self.hs.room_admin.check_not_blocked(room_id)
        room = await self.events.store.get_room(room_id)
        current = await self.events.state.get_membership(room_id, user_id) if room is not None else None
        modules = self.hs.modules.callbacks
        if not by_admin and modules.has("user_may_join_room"):
            await modules.spam_check("user_may_join_room", "Joining this room", user_id, room_id,
                                     current is not None and current.membership == "invite")
        if room is None or not await self.hs.federation_membership.is_resident(room_id):
            candidates = self._remote_servers(room_id, current, servers)
            if candidates or room is None or room.current_state_group is None:
                if room is None and not candidates:
                    raise MatrixError.not_found(f"Unknown room {room_id}")
                if ratelimit:
                    self._ratelimit_join(user_id, room_id, "rc_joins.remote")
                await self.hs.federation_membership.join_remote(
                    user_id, room_id, candidates, {**extra_content, **await self._join_content(user_id)})
                return None
        if ratelimit and (current is None or current.membership != "join"):
            self._ratelimit_join(user_id, room_id, "rc_joins.local")
        content = {**extra_content, **await self._join_content(user_id)}
        fed = self.hs.federation_membership
        try:
            authoriser = await fed.restricted_authoriser(
                room_id, room.room_version, await self.events.state.get_current_state_ids(room_id), user_id)
        except MatrixError as e:
            if e.errcode == Codes.UNABLE_TO_AUTHORISE_JOIN:
                # The user is not in any allowed room (we would be in it if they were).
                raise MatrixError.forbidden("You do not meet any of the room's join conditions") from None
            if e.errcode != Codes.UNABLE_TO_GRANT_JOIN:
                raise
            # No user of ours may invite: another server in the room may authorise it.
            others = [s for s in await self.hs.directory.servers_in_room(room_id) if s != self.hs.server_name]
            if not others:
                raise
            await fed.join_remote(user_id, room_id, [*servers, *others], content)
            return None
        if authoriser is not None:
            content["join_authorised_via_users_server"] = authoriser
        return await self.events.send_state_event(room_id, EventSpec("m.room.member", user_id, content, user_id))

    def _ratelimit_join(self, user_id: str, room_id: str, per_user: str) -> None:
        """``rc_joins.local``/``.remote`` for the user and ``rc_joins_per_room`` for the
        room (429 ``M_LIMIT_EXCEEDED``); nothing is counted when either refuses."""
        limiters = self.hs.ratelimiters
        limiters["rc_joins_per_room"].ratelimit(room_id, update=False)
        limiters[per_user].ratelimit(user_id)
        limiters["rc_joins_per_room"].ratelimit(room_id)

    def ratelimit_invite(self, inviter: str, room_id: str, invitee: str) -> None:
        """``rc_invites``: per room, per invited user and per inviter (429
        ``M_LIMIT_EXCEEDED``); nothing is counted when one refuses."""
        checks = [("rc_invites.per_room", room_id), ("rc_invites.per_user", invitee),
                  ("rc_invites.per_issuer", inviter)]
        for name, key in checks:
            self.hs.ratelimiters[name].ratelimit(key, update=False)
        for name, key in checks:
            self.hs.ratelimiters[name].ratelimit(key)

    async def knock(self, user_id: str, room_id: str, *, reason: str | None = None,
                    servers: Sequence[str] = ()) -> SentEvent | None:
        """Knock on a room (ask to be invited): a knock event if this server takes part
        in the room, else over federation through ``servers``, then the room ID's
        server. M_INCOMPATIBLE_ROOM_VERSION when the room's version has no knocking;
        M_FORBIDDEN when its join rules do not allow it (the auth rules say why).

        Spec: https://spec.matrix.org/latest/client-server-api/#knocking-on-rooms"""
        await self.hs.room_admin.check_not_blocked(room_id)
        room = await self.events.store.get_room(room_id)
        content = _with_reason({**await self._join_content(user_id), "membership": "knock"}, reason)
        if room is None or not await self.hs.federation_membership.is_resident(room_id):
            current = await self.events.state.get_membership(room_id, user_id) if room is not None else None
            candidates = self._remote_servers(room_id, current, servers)
            if not candidates:
                raise MatrixError.not_found(f"Unknown room {room_id}" if room is None
                                            else f"No server to knock on {room_id} through")
            await self.hs.federation_membership.knock_remote(user_id, room_id, candidates, content)
            return None
        if not room.room_version.knock_join_rule:
            raise MatrixError(400, Codes.INCOMPATIBLE_ROOM_VERSION,
                              f"{room_id} is a version {room.room_version.identifier} room:"
                              " knocking needs version 7 or later", room_version=room.room_version.identifier)
        stripped = await self.stripped_state(room_id, user_id)
        return await self.events.send_event(room_id, EventSpec("m.room.member", user_id, content, user_id,
                                                               unsigned={"knock_room_state": stripped}))

    def _remote_servers(self, room_id: str, current: Any, servers: Sequence[str]) -> list[str]:
        out = [s for s in servers if s != self.hs.server_name]
        if current is not None and current.membership in ("invite", "knock"):
            out.append(current.sender.split(":", 1)[1])
        domain = room_id.split(":", 1)[1] if ":" in room_id else None
        if domain:
            out.append(domain)
        return [s for s in dict.fromkeys(out) if s != self.hs.server_name]

    async def leave(self, user_id: str, room_id: str, reason: str | None = None) -> SentEvent | None:
        if self.hs.config.server_notices is not None:
            await self.hs.server_notices.check_may_leave(user_id, room_id)
        current = await self.events.state.get_membership(room_id, user_id)
        if current is not None and current.membership in ("invite", "knock") \
                and not await self.hs.federation_membership.is_resident(room_id):
            # Rejecting an invite to a room we are not in: through the inviter's server;
            # retracting a knock: through the servers of the state we were shown.
            fed = self.hs.federation_membership
            known = await fed.knock_servers(room_id, current.event_id) if current.membership == "knock" else ()
            await fed.leave_remote(user_id, room_id, self._remote_servers(room_id, current, known), reason)
            return None
        return await self._member(room_id, user_id, user_id, _with_reason({"membership": "leave"}, reason))

    async def invite(self, user_id: str, room_id: str, target: str, reason: str | None = None) -> SentEvent:
        await self.hs.room_admin.check_not_blocked(room_id)
        await self.events.get_room(room_id)
        await self._check_invitee(target)
        await self.hs.modules.callbacks.spam_check("user_may_invite", "This invite", user_id, target, room_id)
        return await self._send_invite(room_id, user_id, target, _with_reason({"membership": "invite"}, reason))

    async def send_invite_event(self, room_id: str, sender: str, target: str, content: dict[str, Any]) -> SentEvent:
        """An invite with this content (a third-party invite turned into a membership): to a
        user of ours who must exist, or co-signed by the invitee's server."""
        await self._check_invitee(target)
        return await self._send_invite(room_id, sender, target, content)

    async def kick(self, user_id: str, room_id: str, target: str, reason: str | None = None) -> SentEvent:
        current = await self.events.state.get_membership(room_id, target)
        if current is None or current.membership not in ("join", "invite", "knock"):
            raise MatrixError.forbidden(f"{target} is not in the room")
        return await self._member(room_id, user_id, target, _with_reason({"membership": "leave"}, reason))

    async def ban(self, user_id: str, room_id: str, target: str, reason: str | None = None) -> SentEvent:
        return await self._member(room_id, user_id, target, _with_reason({"membership": "ban"}, reason))

    async def unban(self, user_id: str, room_id: str, target: str, reason: str | None = None) -> SentEvent:
        current = await self.events.state.get_membership(room_id, target)
        if current is None or current.membership != "ban":
            raise MatrixError.forbidden(f"{target} is not banned")
        return await self._member(room_id, user_id, target, _with_reason({"membership": "leave"}, reason))

    async def refresh_profile(self, room_id: str, user_id: str, profile: Mapping[str, str]) -> SentEvent:
        """A new join event of a joined user carrying their current display name and
        avatar (a profile change; a per-room name is replaced, as Synapse does)."""
        return await self._member(room_id, user_id, user_id, {"membership": "join", **profile})

    async def _member(self, room_id: str, sender: str, target: str, content: dict[str, Any]) -> SentEvent:
        return await self.events.send_event(room_id, EventSpec("m.room.member", sender, content, target))

    async def _send_invite(self, room_id: str, sender: str, target: str, content: dict[str, Any]) -> SentEvent:
        # The invitee's name and avatar, so that clients show "invited Bob" (theirs if
        # their server answers quickly).
        content = {**await self.hs.profiles.invite_profile(target), **content}
        stripped = await self.stripped_state(room_id, sender)
        before_persist = None
        if not target.endswith(":" + self.hs.server_name):
            # A user of another server: their server co-signs the invite first.
            fed = self.hs.federation_membership
            full_state = await fed.invite_room_state(room_id, sender)

            async def before_persist(pdu):
                return await fed.send_invite(pdu, full_state)
        return await self.events.send_event(
            room_id, EventSpec("m.room.member", sender, content, target, unsigned={"invite_room_state": stripped}),
            before_persist=before_persist,
        )

    async def stripped_state(self, room_id: str, sender: str) -> list[dict[str, Any]]:
        """Stripped state events for an invite (the create event included, as rooms v12 need),
        with the inviter's membership."""
        current = await self.events.state.get_current_state_ids(room_id)
        keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [("m.room.member", sender)]
        pdus = await self.events.get_pdus([current[k] for k in keys if k in current])
        out = []
        for k in keys:
            pdu = pdus.get(current.get(k, ""))
            if pdu is not None:
                out.append({"type": pdu.type, "state_key": pdu.state_key, "content": pdu.content,
                            "sender": pdu.sender})
        return out

    async def join_content(self, user_id: str) -> dict[str, Any]:
        """The content of a local user's join event (with their profile)."""
        return await self._join_content(user_id)

    async def _join_content(self, user_id: str) -> dict[str, Any]:
        return {"membership": "join", **await self.profiles.get_member_profile(user_id)}

    async def _check_invitee(self, user_id: str) -> None:
        if not is_valid_user_id(user_id):
            raise MatrixError.bad_json(f"{user_id!r} is not a user ID")
        if not user_id.endswith(":" + self.hs.server_name):
            return  # their server says yes or no to the invite
        user = await self.users.get_user(user_id)
        if user is None and self.hs.config.appservice.services and await self.hs.appservices.query_user_exists(user_id):
            user = await self.users.get_user(user_id)  # an application service registered it meanwhile
        if user is None or user.deactivated:
            raise MatrixError.not_found(f"Unknown user {user_id}")


def _object(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MatrixError.bad_json(f"'{key}' must be an object")
    return value


def _with_reason(content: dict[str, Any], reason: str | None) -> dict[str, Any]:
    if reason is not None:
        content["reason"] = reason
    return content
