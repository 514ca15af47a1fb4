"""Profiles: reading them (local, and remote users' through federation), changing them
(display name, avatar, ``m.tz`` and custom fields), answering other servers' profile
queries, and sending a display name or avatar change into every room the user is in.

Spec:
- https://spec.matrix.org/latest/client-server-api/#profiles (and its "Server behaviour")
- https://spec.matrix.org/latest/client-server-api/#mprofile_fields-capability
- https://spec.matrix.org/latest/server-server-api/#get_matrixfederationv1queryprofile

Config (Synapse's keys, gateway/config/profiles.py): ``require_auth_for_profile_requests``,
``limit_profile_requests_to_users_who_share_rooms``, ``allow_profile_lookup_over_federation``,
``include_profile_data_on_invite``, ``enable_set_displayname``, ``enable_set_avatar_url``.

Propagation, as Synapse does it: a display name or avatar change sends a new ``join``
member event with the new global profile into every room the user is joined to
(replacing a per-room name set with a member event). The job is stored with the change
(``profile_propagation``), so a restart resumes it; it goes room by room, paced, and a
newer change starts it over. Rooms whose member event already shows the profile are skipped.

"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from federation.ids import is_valid_user_id
from federation.net.client import FederationRequestError

from ..config import RateLimit
from ..config.profiles import ProfileConfig
from ..http import Codes, MatrixError
from ..storage.database import Database
from ..storage.media import MediaStore
from ..storage.presence import PresenceStore
from ..storage.profiles import MEMBER_FIELDS, ProfileStore, ProfileTooLargeError
from ..storage.state import StateStore
from .background import KeyedTasks
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: Field names: the Common Namespaced Identifier Grammar (spec appendix), 255 bytes at most.
_KEY_GRAMMAR = re.compile(r"[a-z][a-z0-9._\-]*")
MAX_KEY_BYTES = 255
#: The whole profile, as canonical JSON (spec: "the total profile MUST be under 64 KiB").
MAX_PROFILE_BYTES = 64 * 1024
MAX_DISPLAYNAME = 256
MAX_AVATAR_URL = 1000

#: How long a remote user's profile (or its absence) is remembered.
REMOTE_CACHE_SECONDS = 60.0
REMOTE_CACHE_ENTRIES = 10_000
#: Waiting for another server: a client's request, and an invite being built.
REMOTE_TIMEOUT_SECONDS = 10.0
INVITE_LOOKUP_SECONDS = 3.0

#: Pace of one user's propagation (member events per second, burst) and how many
#: users' jobs run at once.
PROPAGATION_PACE = RateLimit(per_second=10, burst_count=20)
MAX_CONCURRENT_JOBS = 4
#: After an unexpected failure (the database went away), the job tries again this much later.
RETRY_SECONDS = 30.0


def check_field_name(field: str) -> None:
    """400 ``M_KEY_TOO_LARGE`` over 255 bytes, ``M_INVALID_PARAM`` outside the grammar."""
    if len(field.encode("utf-8")) > MAX_KEY_BYTES:
        raise MatrixError(400, Codes.KEY_TOO_LARGE, f"Profile field names are at most {MAX_KEY_BYTES} bytes")
    if not _KEY_GRAMMAR.fullmatch(field):
        raise MatrixError.invalid_param(
            "Profile field names follow the Common Namespaced Identifier Grammar ([a-z][a-z0-9._-]*)")


def _check_value(field: str, value: Any) -> Any:
    """The value to store (display names trimmed; "" clears a display name or avatar)."""
    if field in MEMBER_FIELDS:
        if value is None:
            return None
        limit = MAX_DISPLAYNAME if field == "displayname" else MAX_AVATAR_URL
        if not isinstance(value, str) or len(value) > limit:
            raise MatrixError.invalid_param(f"'{field}' must be a string of at most {limit} characters")
        value = value.strip() if field == "displayname" else value
        return value or None
    if field == "m.tz" and not isinstance(value, str):
        raise MatrixError.invalid_param("'m.tz' must be a string (an IANA time zone name)")
    return value


class ProfileService:
    def __init__(self, *, server_name: str, config: ProfileConfig, db: Database, state: StateStore,
                 rooms: Any, federation_client: Any, ratelimit_message: Callable[[str], Awaitable[None]],
                 modules: Any, media: MediaStore):
        """``state``: rooms and memberships; ``rooms`` (RoomsService): member events;
        ``media``: what an avatar names (``max_avatar_size``, ``allowed_avatar_mimetypes``);
        ``federation_client``: other servers' profiles; ``ratelimit_message``: the
        ``rc_message`` check; ``modules``: module callbacks (``on_profile_update``)."""
        self.server_name = server_name
        self.config = config
        self.store = ProfileStore(db)
        self._shared_rooms = PresenceStore(db)
        self.state = state
        self.rooms = rooms
        self.federation_client = federation_client
        self.ratelimit_message = ratelimit_message
        self.modules = modules
        self.media = media
        #: (user ID, field or None) -> (expiry, answer or the MatrixError to raise)
        self._remote: OrderedDict[tuple[str, str | None], tuple[float, dict[str, Any] | MatrixError]] = OrderedDict()
        self._tasks = KeyedTasks("profile propagation")
        self._wanted: set[str] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_JOBS)
        self._pace = RateLimiter(PROPAGATION_PACE)

    def is_mine(self, user_id: str) -> bool:
        return user_id.partition(":")[2] == self.server_name

    # --- reading --------------------------------------------------------------------------

    async def get_profile(self, requester: str | None, user_id: str) -> dict[str, Any]:
        """``GET /profile/{userId}``: every public field (404 when there is none)."""
        await self._check_may_read(requester, user_id)
        if not self.is_mine(user_id):
            return await self.remote_profile(user_id)
        profile = await self.store.get_profile(user_id)
        if not profile:
            raise MatrixError.not_found("Profile was not found")
        return profile

    async def get_field(self, requester: str | None, user_id: str, field: str) -> dict[str, Any]:
        """``GET /profile/{userId}/{keyName}``. An unset display name or avatar is
        ``null`` (as Synapse answers; SyTest reads them before setting them); an unset
        other field, or an unknown user, is 404."""
        check_field_name(field)
        await self._check_may_read(requester, user_id)
        if self.is_mine(user_id):
            profile = await self.store.get_profile(user_id)
            if profile is None:
                raise MatrixError.not_found("Profile was not found")
        else:
            profile = await self.remote_profile(user_id, field)
        if field not in profile and field not in MEMBER_FIELDS:
            raise MatrixError.not_found(f"The user has no {field}")
        return {field: profile.get(field)}

    async def _check_may_read(self, requester: str | None, user_id: str) -> None:
        if not is_valid_user_id(user_id):
            raise MatrixError.invalid_param(f"{user_id!r} is not a user ID")
        if not self.config.limit_profile_requests_to_users_who_share_rooms or requester == user_id:
            return
        if requester is None or not await self._shared_rooms.share_a_room(requester, user_id):
            raise MatrixError.forbidden("You do not share a room with this user")

    # --- other servers' users -------------------------------------------------------------

    async def remote_profile(self, user_id: str, field: str | None = None, *,
                             timeout: float = REMOTE_TIMEOUT_SECONDS) -> dict[str, Any]:
        """A remote user's profile (or its one ``field``) through federation
        ``query/profile``, remembered for a minute: 404 ``M_NOT_FOUND`` and 403
        ``M_FORBIDDEN`` as their server answers, 502 when it cannot be asked."""
        now = time.monotonic()
        for key in ((user_id, field), (user_id, None)):
            hit = self._remote.get(key)
            if hit is not None and hit[0] > now:
                if isinstance(hit[1], MatrixError):
                    raise hit[1]
                return hit[1]
        query = {"user_id": user_id, **({"field": field} if field is not None else {})}
        server = user_id.partition(":")[2]
        try:
            answer = await self.federation_client.request(
                "GET", server, "/_matrix/federation/v1/query/profile", query=query, timeout=timeout,
                max_response_bytes=2 * MAX_PROFILE_BYTES)
        except FederationRequestError as e:
            error = _remote_error(e, user_id)
            if e.status in (403, 404):
                self._remember((user_id, field), error)
            raise error from None
        profile = _clean_remote(answer, field)
        self._remember((user_id, field), profile)
        return profile

    def _remember(self, key: tuple[str, str | None], value: dict[str, Any] | MatrixError) -> None:
        self._remote[key] = (time.monotonic() + REMOTE_CACHE_SECONDS, value)
        self._remote.move_to_end(key)
        while len(self._remote) > REMOTE_CACHE_ENTRIES:
            self._remote.popitem(last=False)

    async def member_profile(self, user_id: str) -> dict[str, str]:
        """The display name and avatar a member event about ``user_id`` carries: ours from
        the database, another server's if it answers within a few seconds (else none)."""
        if self.is_mine(user_id):
            return await self.store.get_member_profile(user_id)
        try:
            # The whole wait is bounded (finding their server too, not only the request).
            profile = await asyncio.wait_for(self.remote_profile(user_id, timeout=INVITE_LOOKUP_SECONDS),
                                             INVITE_LOOKUP_SECONDS)
        except MatrixError as e:
            log.info("no profile of %s for its member event: %s", user_id, e.error)
            return {}
        except TimeoutError:
            log.info("no profile of %s for its member event: their server took too long", user_id)
            return {}
        return {k: profile[k] for k in MEMBER_FIELDS if isinstance(profile.get(k), str)}

    async def invite_profile(self, user_id: str) -> dict[str, str]:
        """What an invite of ``user_id`` carries (``include_profile_data_on_invite``)."""
        return await self.member_profile(user_id) if self.config.include_profile_data_on_invite else {}

    # --- answering other servers ----------------------------------------------------------

    async def federation_query(self, user_id: Any, field: Any) -> dict[str, Any]:
        """``GET /_matrix/federation/v1/query/profile``: the profile, or only ``field``
        (an unset display name or avatar is left out; another unset field is 404)."""
        if not self.config.allow_profile_lookup_over_federation:
            raise MatrixError.forbidden("Profile lookup over federation is disabled on this homeserver")
        if not isinstance(user_id, str) or not user_id:
            raise MatrixError.missing_param("user_id is required")
        if not is_valid_user_id(user_id) or not self.is_mine(user_id):
            raise MatrixError.invalid_param("That user is not on this server")
        if field is not None:
            check_field_name(field)
        profile = await self.store.get_profile(user_id)
        if profile is None:
            raise MatrixError.not_found("Profile was not found")
        if field is None:
            return profile
        if field not in profile and field not in MEMBER_FIELDS:
            raise MatrixError.not_found(f"The user has no {field}")
        return {field: profile[field]} if field in profile else {}

    # --- changing -------------------------------------------------------------------------

    async def set_field(self, requester: Any, user_id: str, field: str, value: Any) -> None:
        """``PUT /profile/{userId}/{keyName}`` by ``requester`` (a ``Requester``)."""
        await self._change(requester, user_id, field, value, delete=False)

    async def delete_field(self, requester: Any, user_id: str, field: str) -> None:
        """``DELETE /profile/{userId}/{keyName}`` (200 also when the field was not set)."""
        await self._change(requester, user_id, field, None, delete=True)

    async def _change(self, requester: Any, user_id: str, field: str, value: Any, *, delete: bool) -> None:
        check_field_name(field)
        if requester.is_guest and field != "displayname":
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests may only change their display name")
        by_admin = requester.user_id != user_id
        if by_admin and not requester.is_admin:
            raise MatrixError.forbidden("You can only change your own profile")
        if not is_valid_user_id(user_id) or not self.is_mine(user_id):
            raise MatrixError.invalid_param("That user is not on this server")
        value = None if delete else _check_value(field, value)
        if not requester.is_admin and not self._may_change(field):
            current = await self.store.get_member_profile(user_id)
            if current.get(field):
                raise MatrixError.forbidden(f"Changing your {field} is disabled on this server")
        if field == "avatar_url" and value is not None:
            await self.check_avatar(value)
        if field in MEMBER_FIELDS:
            await self.ratelimit_message(requester.user_id)
        # A shadow-banned user's new name or avatar stays out of their rooms (as in Synapse).
        await self.update(user_id, field, value, delete=delete, by_admin=by_admin or requester.is_admin,
                          propagate=not requester.shadow_banned)

    async def check_avatar(self, mxc: Any) -> None:
        """403 ``M_FORBIDDEN`` for an avatar ``max_avatar_size`` or ``allowed_avatar_mimetypes``
        refuses: too big, of another media type, or not in our media repository (uploaded
        here or cached from its server: without it neither can be told). Removing an
        avatar ("") is always allowed."""
        config = self.config
        if (config.max_avatar_size is None and config.allowed_avatar_mimetypes is None) or mxc == "":
            return
        info = None
        if isinstance(mxc, str) and mxc.startswith("mxc://"):
            origin, _, media_id = mxc[len("mxc://"):].partition("/")
            if origin and media_id and "/" not in media_id:
                info = await self.media.get_media(origin, media_id)
        if info is None or not info.uploaded:
            raise MatrixError.forbidden("This avatar is not allowed: the file is not in this server's media "
                                        "repository")
        if config.max_avatar_size is not None and (info.media_length is None
                                                   or info.media_length > config.max_avatar_size):
            raise MatrixError.forbidden(f"This avatar is not allowed: files of at most {config.max_avatar_size} "
                                        "bytes may be avatars")
        if config.allowed_avatar_mimetypes is not None and info.media_type not in config.allowed_avatar_mimetypes:
            raise MatrixError.forbidden(f"This avatar is not allowed: {info.media_type} is not one of "
                                        f"{', '.join(config.allowed_avatar_mimetypes)}")

    async def member_event_content(self, sender: str, target: str, content: dict[str, Any]) -> dict[str, Any]:
        """The content of an ``m.room.member`` event a client sends itself (``PUT /state``):
        a join, invite or knock without a display name or avatar gets the target's
        profile's; ``allow_per_room_profiles: false`` replaces the ones it names with
        the profile's; an avatar it names passes ``check_avatar``.
        https://spec.matrix.org/latest/client-server-api/#mroommember"""
        content = dict(content)
        if not self.config.allow_per_room_profiles:
            for key in MEMBER_FIELDS:
                content.pop(key, None)
        avatar = content.get("avatar_url")
        if isinstance(avatar, str):
            await self.check_avatar(avatar)
        if content.get("membership") in ("join", "invite", "knock") and any(k not in content for k in MEMBER_FIELDS):
            if target == sender or self.is_mine(target):
                profile = await self.store.get_member_profile(target)
            else:
                profile = await self.invite_profile(target)
            for key in MEMBER_FIELDS:
                if key not in content and key in profile:
                    content[key] = profile[key]
        return content

    def _may_change(self, field: str) -> bool:
        if field == "displayname":
            return self.config.enable_set_displayname
        if field == "avatar_url":
            return self.config.enable_set_avatar_url
        return True

    async def update(self, user_id: str, field: str, value: Any, *, delete: bool = False,
                     by_admin: bool = False, propagate: bool = True) -> None:
        """Store a checked change of a local user's profile (also the admin API's and
        SSO's way in); a display name or avatar change goes to the user's rooms too."""
        propagate = propagate and field in MEMBER_FIELDS
        try:
            changed = (await self.store.delete_field(user_id, field, propagate=propagate) if delete else
                       await self.store.set_field(user_id, field, value, max_size=MAX_PROFILE_BYTES,
                                                  propagate=propagate))
        except ProfileTooLargeError:
            raise MatrixError(400, Codes.PROFILE_TOO_LARGE,
                              f"The profile would be larger than {MAX_PROFILE_BYTES} bytes") from None
        if not changed:
            raise MatrixError.not_found("Profile was not found")
        if propagate:
            self._schedule(user_id)
        modules = self.modules
        if modules.has("on_profile_update"):
            from ..modules import ProfileInfo

            profile = await self.store.get_member_profile(user_id)
            await modules.notify("on_profile_update", user_id,
                                 ProfileInfo(profile.get("displayname"), profile.get("avatar_url")), by_admin, False)

    # --- propagation into rooms -----------------------------------------------------------

    async def start(self) -> None:
        """At startup: resume every unfinished propagation."""
        for user_id in await self.store.pending_propagations():
            self._schedule(user_id)

    def _schedule(self, user_id: str) -> None:
        self._wanted.add(user_id)  # a running job reads the job row once more before it ends
        self._tasks.start(user_id, lambda: self._propagate(user_id))

    async def idle(self) -> None:
        """Wait until no propagation is running (tests)."""
        await self._tasks.idle()

    async def close(self) -> None:
        await self._tasks.close()

    async def _propagate(self, user_id: str) -> None:
        async with self._slots:
            while not self._tasks.closing:
                try:
                    if not await self._propagate_once(user_id):
                        return
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the stored job is tried again later
                    log.exception("profile propagation for %s failed; trying again in %ds", user_id, RETRY_SECONDS)
                    await asyncio.sleep(RETRY_SECONDS)

    async def _propagate_once(self, user_id: str) -> bool:
        """One pass over the user's rooms; False when no job is left."""
        self._wanted.discard(user_id)
        job = await self.store.get_propagation(user_id)
        if job is None:
            return user_id in self._wanted  # a change came in while we were reading
        generation, last_done = job
        rooms = sorted(await self.state.get_rooms_for_user(user_id))
        for room_id in rooms:
            if last_done is not None and room_id <= last_done:
                continue
            await self._paced(user_id)
            try:
                await self._refresh_room(user_id, room_id)
            except asyncio.CancelledError:
                raise
            except MatrixError as e:
                log.info("profile of %s not updated in %s: %s", user_id, room_id, e.error)
            except Exception:  # noqa: BLE001 - one bad room does not stop the others
                log.exception("profile of %s not updated in %s", user_id, room_id)
            if not await self.store.advance_propagation(user_id, generation, room_id):
                return True  # a newer change: start over
        await self.store.finish_propagation(user_id, generation)
        return True

    async def _paced(self, user_id: str) -> None:
        while (wait := self._pace.check(user_id)) is not None:
            await asyncio.sleep(wait)

    async def _refresh_room(self, user_id: str, room_id: str) -> None:
        """A new join event with the current profile, unless the room already shows it."""
        current = await self.state.get_membership(room_id, user_id)
        if current is None or current.membership != "join":
            return
        profile = await self.store.get_member_profile(user_id)
        if (current.displayname, current.avatar_url) == (profile.get("displayname"), profile.get("avatar_url")):
            return
        await self.rooms.refresh_profile(room_id, user_id, profile)


def _remote_error(e: FederationRequestError, user_id: str) -> MatrixError:
    body = e.body if isinstance(e.body, dict) else {}
    message = body.get("error") if isinstance(body.get("error"), str) else None
    if e.status == 404:
        return MatrixError.not_found(message or f"{user_id} has no profile")
    if e.status == 403:
        return MatrixError.forbidden(message or f"{e.destination} does not share this profile")
    log.info("profile query for %s failed: %s", user_id, e)
    return MatrixError(502, Codes.UNKNOWN, f"Could not fetch the profile of {user_id} from {e.destination}")


def _clean_remote(answer: Any, field: str | None) -> dict[str, Any]:
    """Another server's answer as a profile: an object; a display name and avatar only
    as strings; only ``field`` when one was asked for."""
    if not isinstance(answer, dict):
        raise MatrixError(502, Codes.UNKNOWN, "The user's server gave an invalid profile")
    out = {k: v for k, v in answer.items() if isinstance(k, str) and (field is None or k == field)}
    for key in MEMBER_FIELDS:
        if key in out and not isinstance(out[key], str):
            del out[key]
    return out
