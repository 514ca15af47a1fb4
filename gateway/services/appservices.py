"""Application services (bridges, bots): who they are, what they may do on the
client-server API, and what the homeserver asks them.

Spec: https://spec.matrix.org/latest/application-service-api/
- identity assertion: a request with a service's ``as_token`` acts as its sender, or as
  the user of its namespace named by ``user_id`` (and that user's device named by
  ``device_id``); https://spec.matrix.org/latest/application-service-api/#identity-assertion
- exclusive namespaces: nobody else registers those users or creates those aliases
  (``M_EXCLUSIVE``); https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions
- queries: an unknown user or alias of a service's namespace is asked about
  (``/users/{userId}``, ``/rooms/{roomAlias}``) before the lookup fails;
- third-party networks: ``/thirdparty/*`` answered by asking the services that declared
  the protocol, and the room directories services publish per network.

Transactions (pushing events to services) are in ``appservice_transactions.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from federation.ids import is_valid_user_id

from ..config.appservice import AppServiceConfig, ApplicationService
from ..http import MatrixError
from ..storage.appservice import AppServiceStore
from ..storage.devices import DeviceStore
from ..storage.users import UserExistsError, UserStore
from .appservice_api import AppServiceApi, AppServiceRequestError
from .auth import Requester, user_locked

log = logging.getLogger(__name__)

EXCLUSIVE = "M_EXCLUSIVE"
UNKNOWN_DEVICE = "M_UNKNOWN_DEVICE"
APPSERVICE_LOGIN_UNSUPPORTED = "M_APPSERVICE_LOGIN_UNSUPPORTED"
#: How long third-party protocol metadata is kept (services rarely change it).
PROTOCOL_CACHE_MS = 5 * 60 * 1000
MAX_USER_ID_LENGTH = 255


def _token_key(token: str) -> bytes:
    # Tokens are looked up by their hash: a lookup's timing says nothing about the tokens.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class AppServices:
    def __init__(self, *, server_name: str, config: AppServiceConfig, api: AppServiceApi, store: AppServiceStore,
                 users: UserStore, devices: DeviceStore, clock_ms: Callable[[], int]):
        self.server_name = server_name
        self.config = config
        self.services: tuple[ApplicationService, ...] = config.services
        self.api = api
        self.store = store
        self.users = users
        self.devices = devices
        self.clock_ms = clock_ms
        self._by_token = {_token_key(s.as_token): s for s in self.services}
        self._by_id = {s.id: s for s in self.services}
        self._protocols: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}
        #: ``listener(service, pinged)`` when a service shows it is alive (``pinged``: a
        #: successful ping; else a request with its
        #: token): the transaction sender stops backing off.
        self.alive_listeners: list[Callable[[ApplicationService, bool], None]] = []

    # --- lookups ------------------------------------------------------------------------

    def by_token(self, token: str) -> ApplicationService | None:
        return self._by_token.get(_token_key(token)) if self.services else None

    def by_id(self, service_id: str) -> ApplicationService | None:
        return self._by_id.get(service_id)

    def exclusive_owner(self, user_id: str) -> ApplicationService | None:
        """The service that claims ``user_id`` exclusively (its sender included)."""
        return next((s for s in self.services if s.is_exclusive_user(user_id)), None)

    def is_service_user(self, user_id: str) -> bool:
        """A sender or a user of some service's namespace."""
        return any(s.is_interested_in_user(user_id) for s in self.services)

    def exempt_from_ratelimit(self, user_id: str) -> bool:
        """Services' senders are never rate-limited; the users they act as are not when the
        registration says ``rate_limited: false``."""
        return any(user_id == s.sender or (not s.rate_limited and s.is_user_in_namespace(user_id))
                   for s in self.services)

    def alive(self, service: ApplicationService, *, pinged: bool = False) -> None:
        for listener in self.alive_listeners:
            try:
                listener(service, pinged)
            except Exception:
                log.exception("application service listener failed")

    # --- identity assertion ------------------------------------------------------------

    async def requester(self, service: ApplicationService, token: str, *, user_id: str | None,
                        device_id: str | None, ip: str | None) -> Requester:
        """Who a request made with the service's ``as_token`` acts as: its sender, or the
        ``user_id`` of its namespace (which it must have registered), with ``device_id``
        if given (400 ``M_UNKNOWN_DEVICE`` when the user has no such device)."""
        if not service.may_connect_from(ip):
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=False)
        target = user_id or service.sender
        user = await self.users.get_user(target)
        if target != service.sender:
            if not service.is_user_in_namespace(target):
                raise MatrixError.forbidden(f"Application service cannot masquerade as {target}")
            if user is None:
                raise MatrixError.forbidden(f"Application service has not registered {target}")
        if device_id is not None and await self.devices.get_device(target, device_id) is None:
            raise MatrixError(400, UNKNOWN_DEVICE, f"{target} has no device {device_id}")
        if user is not None and user.locked:
            raise user_locked()  # what an admin decided about the account holds for its service too
        self.alive(service)
        return Requester(target, device_id, token, bool(user and user.admin), app_service_id=service.id,
                         shadow_banned=bool(user and user.shadow_banned), suspended=bool(user and user.suspended))

    # --- registration and exclusivity ----------------------------------------------------

    def check_user_not_exclusive(self, user_id: str, allowed: ApplicationService | None = None) -> None:
        """400 ``M_EXCLUSIVE`` if a service (other than ``allowed``) claims the user."""
        for s in self.services:
            if s is not allowed and s.is_exclusive_user(user_id):
                raise MatrixError(400, EXCLUSIVE, "This user ID is reserved by an application service")

    def check_alias_allowed(self, alias: str, service_id: str | None, user_id: str | None = None) -> None:
        """400 ``M_EXCLUSIVE`` when a service claims the alias exclusively and the request
        is not that service's (its ``as_token``, or its sender's own token); a service may
        only make and delete aliases in its namespace."""
        acting = self.by_id(service_id) if service_id else None
        if acting is None and user_id is not None:
            acting = next((s for s in self.services if s.sender == user_id), None)
        if service_id is not None and acting is not None and not acting.is_alias_in_namespace(alias):
            raise MatrixError(400, EXCLUSIVE, "This alias is outside the application service's namespace")
        for s in self.services:
            if s is not acting and s.is_exclusive_alias(alias):
                raise MatrixError(400, EXCLUSIVE, "This alias is reserved by an application service")

    async def register_user(self, service: ApplicationService, localpart: Any) -> str:
        """``m.login.application_service`` registration of a user of the service's namespace.
        The user ID as given (Synapse does not fold case here: bridges rely on that)."""
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, "M_INVALID_USERNAME", "'username' is required")
        user_id = localpart if localpart.startswith("@") else f"@{localpart}:{self.server_name}"
        if not is_valid_user_id(user_id) or not user_id.endswith(":" + self.server_name) \
                or len(user_id) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, "M_INVALID_USERNAME", f"{localpart!r} is not a valid user ID localpart")
        if not service.is_interested_in_user(user_id):
            raise MatrixError(400, EXCLUSIVE, "This user ID is outside the application service's namespace")
        self.check_user_not_exclusive(user_id, allowed=service)
        try:
            await self.users.create_user(user_id, password_hash=None, created_ts=self.clock_ms(),
                                         displayname=user_id[1:].split(":", 1)[0])
        except UserExistsError:
            raise MatrixError(400, "M_USER_IN_USE", "User ID already taken") from None
        if service.is_exclusive_user(user_id):
            await self.store.set_user_appservice(user_id, service.id)
        return user_id

    async def ensure_senders(self) -> None:
        """Every service's own user exists (services act as it without registering it)."""
        for s in self.services:
            if await self.users.get_user(s.sender) is None:
                try:
                    await self.users.create_user(s.sender, password_hash=None, created_ts=self.clock_ms(),
                                                 displayname=s.sender_localpart)
                except UserExistsError:
                    continue
                await self.store.set_user_appservice(s.sender, s.id)

    def check_login_user(self, service: ApplicationService, user_id: str) -> None:
        """``m.login.application_service``: only as its own users, and not for MSC4190 services."""
        if service.msc4190:
            raise MatrixError(400, APPSERVICE_LOGIN_UNSUPPORTED,
                              "This application service manages devices itself (MSC4190): no /login")
        if not service.is_interested_in_user(user_id):
            raise MatrixError.forbidden("This user is outside the application service's namespace")

    # --- queries -------------------------------------------------------------------------

    async def query_user_exists(self, user_id: str) -> bool:
        """Ask the services whose namespace has ``user_id`` (a local user we do not know);
        True once one says it exists (it registered the user meanwhile)."""
        for s in self.services:
            if s.is_user_in_namespace(user_id) and await self.api.query_user(s, user_id):
                return True
        return False

    async def query_alias_exists(self, alias: str) -> bool:
        """Ask the services whose namespace has ``alias``; True once one made it."""
        for s in self.services:
            if s.is_alias_in_namespace(alias) and await self.api.query_alias(s, alias):
                return True
        return False

    # --- third-party networks ---------------------------------------------------------------

    async def protocols(self, only: str | None = None) -> dict[str, dict[str, Any]]:
        """``GET /thirdparty/protocols``: each protocol's metadata from the services that
        declared it, their ``instances`` merged (with ``instance_id`` filled in as
        ``<service id>|<network id>``, the form ``third_party_instance_id`` takes)."""
        wanted = [(s, p) for s in self.services for p in s.protocols if only is None or p == only]
        answers = await asyncio.gather(*(self._protocol(s, p) for s, p in wanted))
        merged: dict[str, dict[str, Any]] = {}
        for (service, protocol), info in zip(wanted, answers):
            if info is None:
                continue
            instances = [dict(i) for i in info.get("instances") or [] if isinstance(i, dict)]
            for i in instances:
                if isinstance(i.get("network_id"), str):
                    i.setdefault("instance_id", f"{service.id}|{i['network_id']}")
            if protocol not in merged:
                merged[protocol] = {**info, "instances": instances}
            else:
                merged[protocol]["instances"] += instances
        return merged

    async def _protocol(self, service: ApplicationService, protocol: str) -> dict[str, Any] | None:
        now = self.clock_ms()
        cached = self._protocols.get((service.id, protocol))
        if cached is not None and now - cached[0] < PROTOCOL_CACHE_MS:
            return cached[1]
        info = await self.api.get_protocol(service, protocol)
        if info is not None and not isinstance(info.get("instances", []), list):
            info = None
        if info is not None:
            self._protocols[(service.id, protocol)] = (now, info)
        return info

    async def query_3pe(self, kind: str, protocol: str | None, fields: Mapping[str, str]) -> list[dict[str, Any]]:
        """``GET /thirdparty/{user|location}[/{protocol}]``: every interested service's
        answers together (a protocol: the services that declared it; none: all)."""
        services = [s for s in self.services if protocol is None or protocol in s.protocols]
        answers = await asyncio.gather(*(self.api.query_3pe(s, kind, protocol, fields) for s in services))
        return [a for answer in answers for a in answer]

    def known_protocol(self, protocol: str) -> bool:
        return any(protocol in s.protocols for s in self.services)

    # --- ping ------------------------------------------------------------------------------

    async def ping(self, service: ApplicationService, transaction_id: str | None) -> int:
        """``POST /_matrix/client/v1/appservice/{id}/ping``: call the service's ``/ping``.
        The milliseconds it took, or the spec's 502/504 errors."""
        if service.url is None:
            raise MatrixError(400, "M_URL_NOT_SET", "Application service doesn't have a URL configured")
        try:
            duration = await self.api.ping(service, transaction_id)
        except AppServiceRequestError as e:
            if e.status is not None:
                error = MatrixError(502, "M_BAD_STATUS", f"Ping returned status {e.status}")
                error.extra = {"status": e.status, "body": e.body}  # ("status" is also the HTTP status's name)
                raise error from None
            if e.timed_out:
                raise MatrixError(504, "M_CONNECTION_TIMEOUT", "Connection to application service timed out") from None
            raise MatrixError(502, "M_CONNECTION_FAILED", "Could not connect to the application service") from None
        self.alive(service, pinged=True)
        return duration

    # --- published room directories -------------------------------------------------------

    async def set_room_listed(self, service: ApplicationService, network_id: str, room_id: str,
                              visibility: Any) -> None:
        """``PUT /directory/list/appservice/{networkId}/{roomId}`` (``DELETE``: private)."""
        if visibility not in ("public", "private"):
            raise MatrixError.invalid_param("'visibility' must be 'public' or 'private'")
        await self.store.set_room_listed(service.id, network_id, room_id, visibility == "public")

    def parse_instance_id(self, instance_id: str) -> tuple[str, str]:
        """``<service id>|<network id>`` -> (service ID, network ID); 400 when unknown."""
        service_id, sep, network_id = instance_id.partition("|")
        if not sep or self.by_id(service_id) is None:
            raise MatrixError.invalid_param(f"Unknown third_party_instance_id {instance_id!r}")
        return service_id, network_id

    async def close(self) -> None:
        await self.api.close()

