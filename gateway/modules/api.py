"""The API a module gets: register callbacks and web resources, and a few things to do
on the server, under the names Synapse's ``ModuleApi`` uses.

Modules: https://element-hq.github.io/synapse/latest/modules/writing_a_module.html
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .callbacks import ModuleCallbacks
from .event import ModuleEvent

if TYPE_CHECKING:
    from ..server import HomeServer

log = logging.getLogger(__name__)

#: Where modules may serve pages (as in Synapse, not under /_matrix).
WEB_RESOURCE_PREFIXES = ("/_synapse/client/",)


class ModuleApi:
    def __init__(self, hs: "HomeServer", callbacks: ModuleCallbacks, web_resources: dict[str, Any], module_name: str):
        self._hs = hs
        self._callbacks = callbacks
        self._web_resources = web_resources
        self._module_name = module_name

    # --- registration ------------------------------------------------------------

    def register_spam_checker_callbacks(self, **callbacks: Any) -> None:
        self._callbacks.register("spam_checker", callbacks)

    def register_third_party_rules_callbacks(self, **callbacks: Any) -> None:
        self._callbacks.register("third_party_rules", callbacks)

    def register_account_validity_callbacks(self, **callbacks: Any) -> None:
        self._callbacks.register("account_validity", callbacks)

    def register_password_auth_provider_callbacks(self, **callbacks: Any) -> None:
        self._callbacks.register("password_auth_provider", callbacks)

    def register_web_resource(self, path: str, resource: Any) -> None:
        """Serve ``resource`` at ``path``: an aiohttp handler ``async (request) -> Response``,
        or an ``aiohttp.web.Application`` mounted there. The first module to claim a path keeps it."""
        if not path.startswith(WEB_RESOURCE_PREFIXES):
            raise ValueError(f"modules may only serve pages under {', '.join(WEB_RESOURCE_PREFIXES)}, not {path!r}")
        if path in self._web_resources:
            log.warning("module %s wants %s, which an earlier module already serves: ignored",
                        self._module_name, path)
            return
        if not (callable(resource) or isinstance(resource, web.Application)):
            raise TypeError(f"web resource for {path} must be an aiohttp handler or application")
        self._web_resources[path] = resource

    # --- facts about the server ---------------------------------------------------------

    @property
    def server_name(self) -> str:
        return self._hs.server_name

    @property
    def public_baseurl(self) -> str:
        return self._hs.config.public_baseurl

    def get_qualified_user_id(self, username: str) -> str:
        return username if username.startswith("@") else f"@{username}:{self._hs.server_name}"

    def is_mine(self, id_: str) -> bool:
        return id_.partition(":")[2] == self._hs.server_name

    # --- users ---------------------------------------------------------------------------

    async def check_user_exists(self, user_id: str) -> str | None:
        """The canonical user ID if the local user exists (case-insensitively), else None."""
        user = await self._hs.auth.users.get_user(self.get_qualified_user_id(user_id).lower())
        return user.user_id if user is not None else None

    async def is_user_admin(self, user_id: str) -> bool:
        user = await self._hs.auth.users.get_user(user_id)
        return bool(user and user.admin)

    async def get_profile_for_user(self, localpart: str) -> dict[str, Any]:
        from ..storage.profiles import ProfileStore

        return await ProfileStore(self._hs.db).get_profile(self.get_qualified_user_id(localpart)) or {}

    async def register_user(self, localpart: str, displayname: str | None = None, admin: bool = False) -> str:
        """Create a local user without a password; returns the user ID."""
        user_id = self.get_qualified_user_id(localpart)
        await self._hs.auth.users.create_user(user_id, password_hash=None, created_ts=self._hs.clock_ms(),
                                              displayname=displayname or localpart, admin=admin)
        return user_id

    # --- rooms ---------------------------------------------------------------------------

    async def create_and_send_event_into_room(self, event_dict: Mapping[str, Any]) -> ModuleEvent:
        """Send an event as a local user (``type``, ``room_id``, ``sender``, ``content``,
        optional ``state_key``); it goes through the usual checks."""
        from .. services.events import EventSpec

        spec = EventSpec(event_dict["type"], event_dict["sender"], dict(event_dict.get("content") or {}),
                         event_dict.get("state_key"))
        sent = await self._hs.events.send_event(event_dict["room_id"], spec)
        return ModuleEvent(sent.pdu)

    async def get_room_state(self, room_id: str) -> dict[tuple[str, str], ModuleEvent]:
        """The current state of a room this server is in."""
        current = await self._hs.events.state.get_current_state_ids(room_id)
        pdus = await self._hs.events.get_pdus(current.values())
        return {k: ModuleEvent(pdus[e]) for k, e in current.items() if e in pdus}
