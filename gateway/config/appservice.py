"""Application services: ``app_service_config_files`` and the registration files they name.

Spec: https://spec.matrix.org/latest/application-service-api/#registration
Synapse's keys (``app_service_config_files``, ``track_appservice_user_ips``,
``use_appservice_legacy_authorization``) and the registration keys bridges write,
including the unstable ones: ``de.sorunome.msc2409.push_ephemeral`` (ephemeral events
before ``receive_ephemeral``), ``org.matrix.msc3202`` (device lists and one-time key
counts in transactions), ``io.element.msc4190`` (device management without ``/login``),
``ip_range_whitelist`` (where the ``as_token`` may be used from).

A mistake in a registration file stops startup with an error naming the file and the
key, e.g. ``app_service_config_files[0]: /etc/bridge.yaml: namespaces.users[0].regex:
expected a string, got an integer``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

import yaml

from ._values import ConfigError, Section, string_item

#: Registration keys we know but do not act on (no unknown-key warning).
_IGNORED_REGISTRATION_KEYS = ("io.element.msc4502.scopes", "io.element.msc4512.proxy_prefix",
                              "io.element.msc4512.proxy_url")


@dataclass(frozen=True)
class Namespace:
    """One entry of a ``users``/``aliases``/``rooms`` namespace list."""

    exclusive: bool
    regex: re.Pattern[str]

    def matches(self, value: str) -> bool:
        # As Synapse: the regex must match at the start (``re.match``), not the whole string.
        return self.regex.match(value) is not None


@dataclass(frozen=True)
class ApplicationService:
    """One registration file, validated. Pure data with pure checks (no I/O)."""

    id: str
    #: None: the service wants no traffic (no transactions, no queries).
    url: str | None
    as_token: str
    hs_token: str
    sender_localpart: str
    #: The service's own user (``@<sender_localpart>:<server_name>``).
    sender: str
    server_name: str
    users: tuple[Namespace, ...] = ()
    aliases: tuple[Namespace, ...] = ()
    rooms: tuple[Namespace, ...] = ()
    #: Whether the users it masquerades as are rate-limited (never the sender).
    rate_limited: bool = True
    protocols: tuple[str, ...] = ()
    #: ``receive_ephemeral``: ephemeral events go in transactions under ``ephemeral``.
    receive_ephemeral_stable: bool = False
    #: ``de.sorunome.msc2409.push_ephemeral``: the same under ``de.sorunome.msc2409.ephemeral``.
    receive_ephemeral_unstable: bool = False
    #: ``org.matrix.msc3202``: device lists and one-time key counts in transactions.
    msc3202: bool = False
    #: ``io.element.msc4190``: devices made with ``PUT /devices``, no ``/login``.
    msc4190: bool = False
    #: Where requests with the ``as_token`` may come from (None: anywhere).
    ip_range_whitelist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    config_file: str = field(default="", compare=False)

    @property
    def receive_ephemeral(self) -> bool:
        return self.receive_ephemeral_stable or self.receive_ephemeral_unstable

    # --- namespaces ---------------------------------------------------------------

    def is_local_user(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def is_user_in_namespace(self, user_id: str) -> bool:
        """A local user matching one of the ``users`` regexes (the spec's namespaces only
        cover users of this server)."""
        return self.is_local_user(user_id) and any(ns.matches(user_id) for ns in self.users)

    def is_interested_in_user(self, user_id: str) -> bool:
        """The sender or a user of its namespace: who it may act as, whose events it gets."""
        return user_id == self.sender or self.is_user_in_namespace(user_id)

    def is_exclusive_user(self, user_id: str) -> bool:
        return user_id == self.sender or (
            self.is_local_user(user_id) and any(ns.exclusive and ns.matches(user_id) for ns in self.users))

    def is_alias_in_namespace(self, alias: str) -> bool:
        return any(ns.matches(alias) for ns in self.aliases)

    def is_exclusive_alias(self, alias: str) -> bool:
        return any(ns.exclusive and ns.matches(alias) for ns in self.aliases)

    def is_room_in_namespace(self, room_id: str) -> bool:
        return any(ns.matches(room_id) for ns in self.rooms)

    def may_connect_from(self, ip: str | None) -> bool:
        """``ip_range_whitelist``: whether a request from ``ip`` may use the ``as_token``."""
        if self.ip_range_whitelist is None:
            return True
        try:
            address = ipaddress.ip_address((ip or "").split("%", 1)[0])
        except ValueError:
            return False
        return any(address.version == n.version and address in n for n in self.ip_range_whitelist)


@dataclass(frozen=True)
class AppServiceConfig:
    services: tuple[ApplicationService, ...] = ()
    #: ``track_appservice_user_ips``: record the addresses and user agents of requests
    #: made with an ``as_token`` (whois, devices' last seen).
    track_appservice_user_ips: bool = False
    #: ``use_appservice_legacy_authorization``: also send the ``hs_token`` as an
    #: ``access_token`` query parameter (services written before spec v1.4).
    use_legacy_authorization: bool = False
    #: ``experimental_features.msc2409_to_device_messages_enabled``: to-device messages
    #: for a service's users go to services that receive ephemeral events.
    to_device_messages: bool = False
    #: ``experimental_features.msc3202_transaction_extensions``: device lists and one-time
    #: key counts go to services whose registration has ``org.matrix.msc3202: true``.
    msc3202_transaction_extensions: bool = False


def parse_appservice_config(root: Section, experimental: Section, server_name: str,
                            resolve_path) -> tuple[AppServiceConfig, list[str]]:
    """The registrations named by ``app_service_config_files`` (read now), and warnings."""
    files = root.list("app_service_config_files", [], of=string_item)
    services: list[ApplicationService] = []
    warnings: list[str] = []
    seen_ids: dict[str, str] = {}
    seen_tokens: dict[str, str] = {}
    for i, name in enumerate(files):
        where = f"app_service_config_files[{i}]"
        path = resolve_path(name)
        service, unknown = load_registration(path, server_name, where)
        if service.id in seen_ids:
            raise ConfigError(where, f"{path}: id: {service.id!r} is also the id of {seen_ids[service.id]}")
        if service.as_token in seen_tokens:
            raise ConfigError(where, f"{path}: as_token: the same as_token as {seen_tokens[service.as_token]}")
        seen_ids[service.id] = path
        seen_tokens[service.as_token] = path
        services.append(service)
        warnings += [f"{path}: unknown registration key {k!r} (ignored)" for k in unknown]
    config = AppServiceConfig(
        services=tuple(services),
        track_appservice_user_ips=root.bool("track_appservice_user_ips", False),
        use_legacy_authorization=root.bool("use_appservice_legacy_authorization", False),
        to_device_messages=experimental.bool("msc2409_to_device_messages_enabled", False),
        msc3202_transaction_extensions=experimental.bool("msc3202_transaction_extensions", False),
    )
    # Synapse's switch for the ``org.matrix.msc3202.device_id`` query parameter: we always
    # accept it (and the stable ``device_id``), so the key changes nothing.
    experimental.bool("msc3202_device_masquerading", False)
    return config, warnings


def load_registration(path: str, server_name: str, where: str = "") -> tuple[ApplicationService, list[str]]:
    """Read one registration file: the service and its unknown keys. ConfigError naming
    ``where`` (the homeserver key), the file and the registration key."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(where, f"registration file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(where, f"cannot read registration file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(where, f"{path} is not valid YAML: {e}") from None
    try:
        return parse_registration(data, server_name, config_file=path)
    except ConfigError as e:
        raise ConfigError(where, f"{path}: {e}") from None


def parse_registration(data: Any, server_name: str, *, config_file: str = "") -> tuple[ApplicationService, list[str]]:
    """A registration (YAML already loaded) -> the service and its unknown keys."""
    s = Section(data)
    service_id = _non_empty(s, "id")
    as_token = _non_empty(s, "as_token")
    hs_token = _non_empty(s, "hs_token")
    localpart = _non_empty(s, "sender_localpart")
    if quote(localpart) != localpart or ":" in localpart or localpart.startswith("@"):
        raise ConfigError("sender_localpart", f"{localpart!r} is not a user ID localpart (no '@', ':' or "
                                              "characters that need URL encoding)")
    # ``url`` must be there: null explicitly turns traffic off, a forgotten key must not.
    if "url" not in s.data:
        raise ConfigError("url", "is required (null if the service wants no traffic)")
    url = s.str("url", None)
    if url is not None:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError("url", f"expected an http:// or https:// URL, got {url!r}")
        url = url.rstrip("/")
    if not s.has("namespaces"):
        raise ConfigError("namespaces", "is required (a mapping with users, aliases and rooms lists)")
    ns = s.section("namespaces")
    namespaces = {kind: _namespaces(ns, kind) for kind in ("users", "aliases", "rooms")}
    rate_limited = s.raw("rate_limited", True)
    if not isinstance(rate_limited, bool):
        raise ConfigError("rate_limited", "expected true or false")
    protocols = tuple(s.list("protocols", [], of=string_item))
    stable = s.bool("receive_ephemeral", False)
    unstable = s.bool("de.sorunome.msc2409.push_ephemeral", False)
    whitelist = None
    if s.has("ip_range_whitelist"):
        nets = []
        for i, v in enumerate(s.list("ip_range_whitelist", of=string_item)):
            try:
                nets.append(ipaddress.ip_network(v, strict=False))
            except ValueError:
                raise ConfigError(f"ip_range_whitelist[{i}]", f"expected an IP range like 10.0.0.0/8, got {v!r}") from None
        whitelist = tuple(nets)
    for key in _IGNORED_REGISTRATION_KEYS:
        s.ignore(key)
    service = ApplicationService(
        id=service_id, url=url, as_token=as_token, hs_token=hs_token, sender_localpart=localpart,
        sender=f"@{localpart}:{server_name}", server_name=server_name,
        users=namespaces["users"], aliases=namespaces["aliases"], rooms=namespaces["rooms"],
        rate_limited=rate_limited, protocols=protocols,
        receive_ephemeral_stable=stable, receive_ephemeral_unstable=unstable,
        msc3202=s.bool("org.matrix.msc3202", False), msc4190=s.bool("io.element.msc4190", False),
        ip_range_whitelist=whitelist, config_file=config_file,
    )
    unknown = s.unknown_keys() + ns.unknown_keys()
    return service, unknown


def _non_empty(s: Section, key: str) -> str:
    value = s.str(key)
    if not value:
        raise ConfigError(key, "must not be empty")
    return value


def _namespaces(ns: Section, kind: str) -> tuple[Namespace, ...]:
    out = []
    for i, item in enumerate(ns.list(kind, [])):
        entry = Section(item, f"{ns.key(kind)}[{i}]")
        regex = entry.str("regex")
        exclusive = entry.raw("exclusive")
        if not isinstance(exclusive, bool):
            raise ConfigError(entry.key("exclusive"), "expected true or false")
        try:
            compiled = re.compile(regex)
        except re.error as e:
            raise ConfigError(entry.key("regex"), f"{regex!r} is not a valid regular expression: {e}") from None
        entry.ignore("group_id")  # Synapse's groups are long gone
        out.append(Namespace(exclusive, compiled))
    return tuple(out)
