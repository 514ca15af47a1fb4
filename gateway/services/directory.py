"""Room aliases and the public room directory.

Spec:
- aliases: https://spec.matrix.org/latest/client-server-api/#room-aliases
- m.room.canonical_alias: https://spec.matrix.org/latest/client-server-api/#mroomcanonical_alias
- room directory: https://spec.matrix.org/latest/client-server-api/#listing-rooms
- federation: https://spec.matrix.org/latest/server-server-api/#room-directory and
  https://spec.matrix.org/latest/server-server-api/#public-room-directory

Config (Synapse's keys): ``alias_creation_rules``, ``room_list_publication_rules``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Callable

from federation.auth_rules import get_required_level_for_event, get_user_power_level
from federation.ids import RoomAlias, get_domain_from_id
from federation.net.client import FederationRequestError

from ..config.directory import rules_allow
from ..http import Codes, MatrixError
from ..storage.directory import AliasExistsError, DirectoryStore, RoomSummary

if TYPE_CHECKING:
    from federation.net.client import FederationClient

    from ..config.directory import DirectoryConfig
    from ..modules import ModuleCallbacks
    from .appservices import AppServices
    from .events import EventsService

log = logging.getLogger(__name__)

#: Public room list page size when a client gives no limit (and the largest we serve).
MAX_PUBLIC_ROOMS_LIMIT = 500


def parse_alias(alias: str) -> RoomAlias:
    try:
        return RoomAlias.parse(alias)
    except ValueError as e:
        raise MatrixError.invalid_param(f"{alias!r} is not a valid room alias: {e}") from None


def parse_since_token(token: str | None) -> int:
    """Public room list tokens are ``p<offset>``."""
    if not token:
        return 0
    if not token.startswith("p") or not token[1:].isdigit():
        raise MatrixError.invalid_param(f"Invalid 'since' token {token!r}")
    return int(token[1:])


def room_chunk(room: RoomSummary) -> dict[str, Any]:
    """A ``PublishedRoomsChunk`` entry."""
    out: dict[str, Any] = {
        "room_id": room.room_id,
        "num_joined_members": room.num_joined_members,
        "world_readable": room.history_visibility == "world_readable",
        "guest_can_join": room.guest_access == "can_join",
        "join_rule": room.join_rules or "invite",
    }
    for key, value in (("name", room.name), ("topic", room.topic), ("avatar_url", room.avatar),
                       ("canonical_alias", room.canonical_alias), ("room_type", room.room_type)):
        if value is not None:
            out[key] = value
    return out


class DirectoryService:
    def __init__(self, *, config: DirectoryConfig, store: DirectoryStore, server_name: str, events: EventsService,
                 federation_client: FederationClient, appservices: AppServices, modules: ModuleCallbacks,
                 clock_ms: Callable[[], int]):
        """``events``: rooms, their state and the events aliases send; ``federation_client``
        asks other servers about their aliases and public rooms; ``appservices``: the
        aliases services hold, and asking them about unknown ones."""
        self.config = config
        self.store = store
        self.server_name = server_name
        self.events = events
        self.federation_client = federation_client
        self.appservices = appservices
        self.modules = modules
        self.clock_ms = clock_ms

    def is_local(self, alias: RoomAlias) -> bool:
        return alias.server_name == self.server_name

    # --- aliases -----------------------------------------------------------------

    async def create_alias(self, user_id: str, alias: str, room_id: str, *, is_admin: bool = False,
                           app_service_id: str | None = None) -> None:
        """``PUT /directory/room/{roomAlias}``: the user must be in the room (or a server
        admin), the alias on this server, free, and allowed by ``alias_creation_rules``.
        An application service makes the aliases of its namespace (without being in the
        room); nobody else makes those a service claims exclusively (``M_EXCLUSIVE``)."""
        parsed = parse_alias(alias)
        if not self.is_local(parsed):
            raise MatrixError.invalid_param("Room aliases can only be created on this server")
        await self.events.get_room(room_id)
        if self.appservices.services:
            self.appservices.check_alias_allowed(alias, app_service_id, user_id)
        if not is_admin and app_service_id is None:
            member = await self.events.state.get_membership(room_id, user_id)
            if member is None or member.membership != "join":
                raise MatrixError.forbidden("You must be joined to the room to give it an alias")
            if not rules_allow(self.config.alias_creation_rules, user_id, room_id, [alias]):
                raise MatrixError.forbidden("This server does not allow you to create this alias")
            await self.modules.spam_check("user_may_create_room_alias", "Creating this alias",
                                                       user_id, parsed)
        await self._insert_alias(alias, room_id, user_id)

    async def check_alias_available(self, alias: str) -> None:
        """For createRoom's ``room_alias_name``: M_ROOM_IN_USE before the room exists."""
        if await self.store.get_alias(alias) is not None:
            raise MatrixError(400, Codes.ROOM_IN_USE, f"Room alias {alias} is already in use")

    async def _insert_alias(self, alias: str, room_id: str, creator: str) -> None:
        try:
            await self.store.create_alias(alias, room_id, creator, self.clock_ms())
        except AliasExistsError:
            raise MatrixError(409, Codes.ROOM_IN_USE, f"Room alias {alias} already exists") from None

    async def create_room_alias(self, alias: str, room_id: str, creator: str) -> None:
        """The alias of a room createRoom just made (``room_alias_name``)."""
        await self._insert_alias(alias, room_id, creator)

    async def delete_alias(self, user_id: str, alias: str, *, is_admin: bool = False,
                           app_service_id: str | None = None) -> None:
        """``DELETE /directory/room/{roomAlias}``: by the alias's creator, a user who may
        change the room's ``m.room.canonical_alias``, a server admin, or the application
        service whose namespace has it. A canonical alias event that names the alias is
        updated (when the user may send it)."""
        parsed = parse_alias(alias)
        if not self.is_local(parsed):
            raise MatrixError.invalid_param("Only aliases on this server can be deleted here")
        if self.appservices.services:
            self.appservices.check_alias_allowed(alias, app_service_id, user_id)
        row = await self.store.get_alias(alias)
        if row is None:
            raise MatrixError.not_found(f"Room alias {alias} not found")
        if not (is_admin or app_service_id is not None or row.creator == user_id
                or await self.may_send_state(row.room_id, user_id, "m.room.canonical_alias")):
            raise MatrixError.forbidden("You may not delete this alias")
        await self.store.delete_alias(alias)
        await self._drop_from_canonical_alias(row.room_id, user_id, alias)

    async def _drop_from_canonical_alias(self, room_id: str, user_id: str, alias: str) -> None:
        from .events import EventSpec

        event_id = await self.events.state.get_current_state_event_id(room_id, "m.room.canonical_alias", "")
        if event_id is None:
            return
        pdu = (await self.events.get_pdus([event_id])).get(event_id)
        if pdu is None:
            return
        content = dict(pdu.content)
        changed = False
        if content.get("alias") == alias:
            content.pop("alias")
            changed = True
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if not changed:
            return
        try:
            await self.events.send_event(room_id, EventSpec("m.room.canonical_alias", user_id, content, ""))
        except MatrixError as e:
            log.info("could not update the canonical alias of %s after deleting %s: %s", room_id, alias, e)

    async def get_local_aliases(self, room_id: str) -> list[str]:
        return await self.store.get_aliases_for_room(room_id)

    async def resolve_alias(self, alias: str) -> tuple[str, list[str]]:
        """A room alias -> (room ID, servers that can help joining it): from our own
        directory, or over federation (``GET /_matrix/federation/v1/query/directory``).
        M_NOT_FOUND if nobody knows it."""
        parsed = parse_alias(alias)
        if self.is_local(parsed):
            row = await self.store.get_alias(alias)
            if row is None and self.appservices.services and await self.appservices.query_alias_exists(alias):
                row = await self.store.get_alias(alias)  # the application service made it meanwhile
            if row is None:
                raise MatrixError.not_found(f"Room alias {alias} not found")
            return row.room_id, await self.servers_in_room(row.room_id)
        try:
            answer = await self.federation_client.request(
                "GET", parsed.server_name, "/_matrix/federation/v1/query/directory", query={"room_alias": alias},
                timeout=30,
            )
        except FederationRequestError as e:
            if e.status == 404:
                raise MatrixError.not_found(f"Room alias {alias} not found") from None
            log.info("alias %s: directory query failed: %s", alias, e)
            raise MatrixError(502, Codes.UNKNOWN, f"Could not ask {parsed.server_name} about {alias}") from None
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise MatrixError(502, Codes.UNKNOWN, f"{parsed.server_name} gave an invalid answer about {alias}")
        servers = [s for s in servers if isinstance(s, str)]
        if parsed.server_name not in servers:
            servers.insert(0, parsed.server_name)
        return room_id, servers

    async def servers_in_room(self, room_id: str) -> list[str]:
        """This server first, then the servers of the joined members."""
        servers = [self.server_name]
        for m in await self.events.state.get_members(room_id, "join"):
            try:
                domain = get_domain_from_id(m.user_id)
            except ValueError:
                continue
            if domain not in servers:
                servers.append(domain)
        return servers

    async def check_canonical_alias(self, room_id: str, content: Mapping[str, Any]) -> None:
        """``m.room.canonical_alias`` content a client sends: well-formed aliases, and
        the local ones must exist and point to this room (M_BAD_ALIAS)."""
        aliases: list[str] = []
        if "alias" in content and content["alias"] is not None:
            if not isinstance(content["alias"], str):
                raise MatrixError.invalid_param("'alias' must be a room alias")
            aliases.append(content["alias"])
        if "alt_aliases" in content:
            alt = content["alt_aliases"]
            if not isinstance(alt, list) or not all(isinstance(a, str) for a in alt):
                raise MatrixError.invalid_param("'alt_aliases' must be a list of room aliases")
            aliases += alt
        for alias in aliases:
            parsed = parse_alias(alias)
            if not self.is_local(parsed):
                continue  # other servers' aliases are not checked (that would need a query per send)
            row = await self.store.get_alias(alias)
            if row is None or row.room_id != room_id:
                raise MatrixError(400, Codes.BAD_ALIAS, f"Room alias {alias} does not point to this room")

    # --- permissions ---------------------------------------------------------------

    async def may_send_state(self, room_id: str, user_id: str, event_type: str) -> bool:
        """Whether ``user_id`` is joined and has the power to send this state event."""
        member = await self.events.state.get_membership(room_id, user_id)
        if member is None or member.membership != "join":
            return False
        room = await self.events.get_room(room_id)
        current = await self.events.state.get_current_state_ids(room_id)
        keys = [("m.room.power_levels", ""), ("m.room.create", "")]
        pdus = await self.events.get_pdus([current[k] for k in keys if k in current])
        pl = pdus.get(current.get(("m.room.power_levels", ""), ""))
        create = pdus.get(current.get(("m.room.create", ""), ""))
        pl_content = pl.content if pl is not None else None
        level = get_user_power_level(user_id, pl_content, create, room.room_version)
        return level >= get_required_level_for_event(event_type, True, pl_content, room.room_version)

    # --- the public room list ----------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        room = await self.events.get_room(room_id)
        return "public" if room.is_public else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: str, *, is_admin: bool = False) -> None:
        """``PUT /directory/list/room/{roomId}``: by a member who may change the room's
        canonical alias (or a server admin); publishing also needs
        ``room_list_publication_rules`` to allow it."""
        if visibility not in ("public", "private"):
            raise MatrixError.invalid_param("'visibility' must be 'public' or 'private'")
        await self.events.get_room(room_id)
        if not is_admin and not await self.may_send_state(room_id, user_id, "m.room.canonical_alias"):
            raise MatrixError.forbidden("You may not change this room's visibility in the room directory")
        if visibility == "public" and not is_admin:
            await self.check_may_publish(user_id, room_id)
            await self.modules.spam_check("user_may_publish_room", "Publishing this room",
                                                       user_id, room_id)
        modules = self.modules
        if modules.has("check_visibility_can_be_modified"):
            state = await self.events.module_state_map(await self.events.state.get_current_state_ids(room_id))
            await modules.all_true("check_visibility_can_be_modified", "Changing this room's visibility",
                                   room_id, state, visibility)
        await self.store.set_room_public(room_id, visibility == "public")

    def may_publish(self, user_id: str, room_id: str | None, aliases: list[str]) -> bool:
        """Whether ``room_list_publication_rules`` let the user publish the room."""
        return rules_allow(self.config.room_list_publication_rules, user_id, room_id, aliases)

    async def check_may_publish(self, user_id: str, room_id: str | None, aliases: list[str] | None = None) -> None:
        if aliases is None:
            aliases = await self.store.get_aliases_for_room(room_id) if room_id else []
            if room_id:
                canonical = await self._canonical_alias(room_id)
                if canonical and canonical not in aliases:
                    aliases.append(canonical)
        if not rules_allow(self.config.room_list_publication_rules, user_id, room_id, aliases):
            raise MatrixError.forbidden("Not allowed to publish this room in the room directory")

    async def _canonical_alias(self, room_id: str) -> str | None:
        event_id = await self.events.state.get_current_state_event_id(room_id, "m.room.canonical_alias", "")
        pdu = (await self.events.get_pdus([event_id])).get(event_id) if event_id else None
        alias = pdu.content.get("alias") if pdu is not None else None
        return alias if isinstance(alias, str) else None

    async def list_public_rooms(
        self, *, limit: int | None, since: str | None, search_term: str | None = None,
        room_types: list[str | None] | None = None, network: tuple[str, str] | None = None,
        all_networks: bool = False,
    ) -> dict[str, Any]:
        """One page of this server's public room list (``PublicRoomsResponse``), or of an
        application service network's (``network``), or of all of them (``all_networks``)."""
        if limit is not None and limit < 0:
            raise MatrixError.invalid_param("'limit' must not be negative")
        offset = parse_since_token(since)
        page = None if limit is None else min(limit, MAX_PUBLIC_ROOMS_LIMIT)
        rooms = await self.store.get_public_rooms(
            offset=offset, limit=None if page is None else page + 1, search=search_term or None,
            room_types=room_types, network=network, all_networks=all_networks,
        )
        body: dict[str, Any] = {
            "chunk": [room_chunk(r) for r in rooms[:page]],
            "total_room_count_estimate": await self.store.count_public_rooms(),
        }
        if page is not None and len(rooms) > page:
            body["next_batch"] = f"p{offset + page}"
        if offset > 0:
            body["prev_batch"] = f"p{max(0, offset - (page or offset))}"
        return body

    async def query_remote_public_rooms(self, server: str, body: Mapping[str, Any]) -> Any:
        """``POST /_matrix/federation/v1/publicRooms`` on another server."""
        try:
            return await self.federation_client.request(
                "POST", server, "/_matrix/federation/v1/publicRooms",
                content={k: v for k, v in body.items() if v is not None}, timeout=30,
            )
        except FederationRequestError as e:
            log.info("public rooms of %s: %s", server, e)
            raise MatrixError(502, Codes.UNKNOWN, f"Could not get the public rooms of {server}") from None

