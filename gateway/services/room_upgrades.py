"""Room upgrades: ``POST /rooms/{roomId}/upgrade`` and what follows a user into the
replacement room.

Spec: https://spec.matrix.org/latest/client-server-api/#room-upgrades (server behaviour)

An upgrade (one at a time per room; a repeated request within ``REPEAT_WINDOW_MS``
returns the room the first made):
1. the new room: ``m.room.create`` with ``predecessor``, the upgrader's join, the power
   levels (the upgrader raised for now if needed), the recommended state, space links;
2. ``m.room.tombstone`` in the old room (for rooms 12+ after the new room, whose ID comes
   from its create event; otherwise the new room is made while the tombstone is held, so
   that ``predecessor.event_id`` names it);
3. the old room's bans in the new room; local aliases and the directory listing move,
   the local aliases of ``m.room.canonical_alias`` with them;
4. the tags, push rules and ``m.direct`` of the old room's local members follow;
5. the old room's ordinary members lose the power to talk and invite; the upgrader's
   level in the new room goes back to what it was.
Nobody is invited to the new room (as Synapse): members of a public room simply join.

When this server first joins a room that replaced one it is in (a remote upgrade, the
old room's tombstone pointing at it), steps 3 (aliases, listing) and 4 happen then, as
in Synapse; a later local join copies the joiner's settings again, without overwriting.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from federation.auth_rules import room_creators
from federation.ids import is_valid_user_id
from federation.room_upgrades import (
    TOMBSTONE_BODY,
    direct_with_room,
    restricted_power_levels,
    split_canonical_alias,
    transferable_state,
    upgraded_create_content,
    upgraded_power_levels,
)
from federation.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from federation.events import PDU

from ..http import Codes, MatrixError
from ..storage.account_data import GLOBAL
from .events import EventSpec
from .rooms import default_power_levels, random_room_id

log = logging.getLogger(__name__)

#: An upgrade of the same room to the same version asked again within this time (a
#: client's retry, two moderators at once) gets the room the first one made.
REPEAT_WINDOW_MS = 5 * 60 * 1000

TOMBSTONE = "m.room.tombstone"
PL = ("m.room.power_levels", "")
CREATE = ("m.room.create", "")


def parse_upgrade_request(body: Mapping[str, Any]) -> tuple[RoomVersion, list[str]]:
    """``new_version`` (400 ``M_UNSUPPORTED_ROOM_VERSION`` when unknown) and
    ``additional_creators`` (user IDs; ignored by versions without them)."""
    version_id = body.get("new_version")
    if version_id is None:
        raise MatrixError.missing_param("'new_version' is required")
    if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, Codes.UNSUPPORTED_ROOM_VERSION,
                          f"This server does not support room version {version_id!r}")
    rv = KNOWN_ROOM_VERSIONS[version_id]
    extra = body.get("additional_creators", [])
    if extra is None:
        extra = []
    if not isinstance(extra, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in extra):
        raise MatrixError.bad_json("'additional_creators' must be a list of user IDs")
    return rv, extra if rv.privileged_creators else []


class RoomUpgradeService:
    def __init__(self, *, server_name: str, events, rooms, directory, account_data_store, push, notifier,
                 modules, clock_ms):
        self.server_name = server_name
        self.events = events
        self.rooms = rooms
        self.directory = directory
        self.account_data = account_data_store
        self.push = push
        self.notifier = notifier
        self.modules = modules
        self.clock_ms = clock_ms
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _is_local(self, identifier: str) -> bool:
        """Whether a user ID or room alias is of this server (``:`` + server name ends it)."""
        return identifier.partition(":")[2] == self.server_name

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = asyncio.Lock()
        return lock

    # --- upgrading -------------------------------------------------------------------

    async def upgrade(self, user_id: str, room_id: str, new_version: RoomVersion,
                      additional_creators: Sequence[str] = ()) -> str:
        """Upgrade ``room_id`` to ``new_version`` as ``user_id``; returns the new room's ID.
        404 for a room this server does not know, 403 unless the user may send the
        tombstone."""
        await self.events.get_room(room_id)
        if not await self.directory.may_send_state(room_id, user_id, TOMBSTONE):
            raise MatrixError.forbidden("You do not have the power to upgrade this room")
        await self.modules.spam_check("user_may_create_room", "Creating a room", user_id)
        async with self._lock(room_id):
            earlier = await self._recent_upgrade(room_id, new_version)
            if earlier is not None:
                return earlier
            return await self._upgrade(user_id, room_id, new_version, list(additional_creators))

    async def _recent_upgrade(self, room_id: str, new_version: RoomVersion) -> str | None:
        """The room a tombstone sent in the last ``REPEAT_WINDOW_MS`` points at, if it is a
        room of ``new_version`` on this server."""
        event_id = await self.events.state.get_current_state_event_id(room_id, TOMBSTONE, "")
        tombstone = (await self.events.get_pdus([event_id])).get(event_id) if event_id else None
        if tombstone is None or self.clock_ms() - tombstone.origin_server_ts > REPEAT_WINDOW_MS:
            return None
        target = tombstone.content.get("replacement_room")
        room = await self.events.store.get_room(target) if isinstance(target, str) else None
        if room is None or room.room_version.identifier != new_version.identifier:
            return None
        return room.room_id

    async def _upgrade(self, user_id: str, room_id: str, new_version: RoomVersion,
                       additional_creators: list[str]) -> str:
        old_room = await self.events.get_room(room_id)
        old_version = old_room.room_version
        state_ids = await self.events.state.get_current_state_ids(room_id)
        wanted = {k: e for k, e in state_ids.items() if k[0] != "m.room.member"}
        state = await self.events.get_state_events(wanted)
        create = state[CREATE]
        old_pl = state.get(PL)
        old_levels: Mapping[str, Any] = old_pl.content if old_pl is not None \
            else default_power_levels(old_version, user_id, "private_chat", [])
        was_creator = old_version.privileged_creators and user_id in room_creators(create, old_version)
        new_creators = [user_id, *additional_creators] if new_version.privileged_creators else []
        initial_pl, final_pl = upgraded_power_levels(old_levels, old_version, new_version, user_id, was_creator,
                                                     new_creators)
        copied = transferable_state({k: p.content for k, p in state.items()})

        async def create_new_room(new_room_id: str | None, tombstone_id: str | None) -> str:
            content = upgraded_create_content(create.content, room_id, new_version, user_id, tombstone_id,
                                              additional_creators)
            specs = [EventSpec("m.room.create", user_id, content, ""),
                     EventSpec("m.room.member", user_id, await self.rooms.join_content(user_id), user_id),
                     EventSpec("m.room.power_levels", user_id, initial_pl, "")]
            specs += [EventSpec(t, user_id, c, sk) for (t, sk), c in copied.items()]
            real_id, _ = await self.events.create_room(new_version, specs, creator=user_id,
                                                       is_public=old_room.is_public, room_id=new_room_id)
            return real_id

        def tombstone(new_id: str) -> EventSpec:
            return EventSpec(TOMBSTONE, user_id, {"body": TOMBSTONE_BODY, "replacement_room": new_id}, "")

        if new_version.room_id_from_create_event:
            new_room_id = await create_new_room(None, None)
            await self.events.send_event(room_id, tombstone(new_room_id))
        else:
            new_room_id = random_room_id(self.server_name)
            created: list[str] = []

            async def before_tombstone_stored(pdu: PDU) -> PDU:
                # Under the old room's lock, with the tombstone's ID known. Another
                # process moving the old room on means building the tombstone again:
                # the room made the first time stays (its predecessor then names the
                # first tombstone).
                if not created:
                    created.append(await create_new_room(new_room_id, pdu.event_id))
                return pdu

            await self.events.send_event(room_id, tombstone(new_room_id), before_persist=before_tombstone_stored)
        log.info("%s upgraded %s to %s (version %s)", user_id, room_id, new_room_id, new_version.identifier)

        await self._copy_bans(user_id, room_id, new_room_id)
        await self._move_aliases(user_id, room_id, new_room_id, state.get(("m.room.canonical_alias", "")))
        await self.transfer(room_id, new_room_id)
        await self._restrict_old_room(user_id, room_id, old_version)
        if final_pl != initial_pl:
            await self.events.send_event(new_room_id, EventSpec("m.room.power_levels", user_id, final_pl, ""))
        return new_room_id

    async def _copy_bans(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        """The old room's bans, sent again by the upgrader (one refused ban, such as one
        of a new creator, does not stop the others)."""
        banned = await self.events.state.get_members(old_room_id, "ban")
        pdus = await self.events.get_pdus([m.event_id for m in banned])
        specs = [EventSpec("m.room.member", user_id, dict(pdus[m.event_id].content), m.user_id)
                 for m in banned if m.event_id in pdus and m.user_id != user_id]
        if not specs:
            return
        try:
            await self.events.send_events(new_room_id, specs)
            return
        except MatrixError:
            pass
        for spec in specs:
            try:
                await self.events.send_event(new_room_id, spec)
            except MatrixError as e:
                log.info("upgrade of %s: ban of %s not copied: %s", old_room_id, spec.state_key, e.error)

    async def _move_aliases(self, user_id: str, old_room_id: str, new_room_id: str,
                            canonical: PDU | None) -> None:
        """Local aliases point at the new room; the canonical alias event follows them."""
        await self.directory.store.move_aliases(old_room_id, new_room_id)
        if canonical is None:
            return
        old_content, new_content = split_canonical_alias(canonical.content, self._is_local)
        for room, content in ((old_room_id, old_content), (new_room_id, new_content)):
            if room == old_room_id and content == canonical.content or room == new_room_id and not content:
                continue
            try:
                await self.events.send_event(room, EventSpec("m.room.canonical_alias", user_id, content, ""))
            except MatrixError as e:
                log.info("upgrade of %s: canonical alias of %s not updated: %s", old_room_id, room, e.error)

    async def _restrict_old_room(self, user_id: str, room_id: str, version: RoomVersion) -> None:
        """Ordinary members of the old room may no longer talk or invite (when the
        upgrader may change the power levels; as in Synapse, the upgrade stands if not)."""
        event_id = await self.events.state.get_current_state_event_id(room_id, *PL)
        pl = (await self.events.get_pdus([event_id])).get(event_id) if event_id else None
        restricted = restricted_power_levels(pl.content if pl is not None else {}, version)
        if restricted is None:
            return
        try:
            await self.events.send_event(room_id, EventSpec("m.room.power_levels", user_id, restricted, ""))
        except MatrixError as e:
            log.info("upgrade of %s: power levels of the old room not restricted: %s", room_id, e.error)

    # --- what follows the users ------------------------------------------------------------

    async def transfer(self, old_room_id: str, new_room_id: str) -> None:
        """This server learnt of the replacement room (it upgraded the room, or joined
        the new one): the directory listing and local aliases move, and every local member
        of the old room has their tags, push rules and ``m.direct`` copied."""
        old = await self.events.store.get_room(old_room_id)
        if old is not None and old.is_public:
            await self.directory.store.set_room_public(old_room_id, False)
            await self.directory.store.set_room_public(new_room_id, True)
        await self.directory.store.move_aliases(old_room_id, new_room_id)
        members = await self.events.state.get_members(old_room_id, "join")
        await self.copy_user_state(old_room_id, new_room_id, [m.user_id for m in members if self._is_local(m.user_id)])

    async def copy_user_state(self, old_room_id: str, new_room_id: str, user_ids: Sequence[str]) -> None:
        """Tags and push rules of the old room, added to the new one (what the user set
        there already stays), and the new room next to the old one in ``m.direct``."""
        for user_id in user_ids:
            try:
                await self._copy_tags(user_id, old_room_id, new_room_id)
                direct = await self.account_data.get(user_id, GLOBAL, "m.direct")
                updated = direct_with_room(direct, old_room_id, new_room_id) if isinstance(direct, dict) else None
                if updated is not None:
                    await self.account_data.put(user_id, GLOBAL, "m.direct", updated)
                await self.push.copy_room_rules(user_id, old_room_id, new_room_id)
            except Exception:
                log.exception("copying %s's settings from %s to %s failed", user_id, old_room_id, new_room_id)
        self.notifier.notify_users(user_ids)

    async def _copy_tags(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        old = await self.account_data.get(user_id, old_room_id, "m.tag") or {}
        tags = old.get("tags")
        if not isinstance(tags, dict) or not tags:
            return
        current = await self.account_data.get(user_id, new_room_id, "m.tag") or {}
        have = current.get("tags") if isinstance(current.get("tags"), dict) else {}
        if all(t in have for t in tags):
            return
        await self.account_data.put(user_id, new_room_id, "m.tag", {"tags": {**tags, **have}})

    async def predecessor(self, room_id: str) -> str | None:
        """The room ``room_id`` replaced, if its create event names one whose current
        tombstone points back at ``room_id`` (a room cannot claim to replace any room it
        likes)."""
        create_id = await self.events.state.get_current_state_event_id(room_id, *CREATE)
        create = (await self.events.get_pdus([create_id])).get(create_id) if create_id else None
        pred = create.content.get("predecessor") if create is not None else None
        old_room_id = pred.get("room_id") if isinstance(pred, dict) else None
        if not isinstance(old_room_id, str) or old_room_id == room_id:
            return None
        tomb_id = await self.events.state.get_current_state_event_id(old_room_id, TOMBSTONE, "")
        tombstone = (await self.events.get_pdus([tomb_id])).get(tomb_id) if tomb_id else None
        if tombstone is None or tombstone.content.get("replacement_room") != room_id:
            return None
        return old_room_id

    async def on_joined(self, user_id: str, room_id: str, *, remote_join: bool) -> None:
        """After a local user joined ``room_id``: if it replaced a room, their settings
        follow them (and, when this server just joined over federation, everything
        ``transfer`` moves). Never fails the join."""
        try:
            old_room_id = await self.predecessor(room_id)
            if old_room_id is None:
                return
            if remote_join:
                await self.transfer(old_room_id, room_id)
            await self.copy_user_state(old_room_id, room_id, [user_id])
        except Exception:
            log.exception("carrying %s's settings into upgraded room %s failed", user_id, room_id)
