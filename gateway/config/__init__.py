"""homeserver.yaml -> typed, validated configuration.

This is the one place that reads YAML. Key names follow Synapse's configuration manual
wherever Gateway has the same feature, so operators can paste their sections across.
Unknown keys produce warnings; wrong values raise ConfigError naming the key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import yaml

from federation.net.ip_ranges import DEFAULT_IP_RANGE_BLACKLIST
from federation.room_versions import KNOWN_ROOM_VERSIONS

from ._values import ConfigError, Section, string_item
from .appservice import AppServiceConfig, parse_appservice_config
from .directory import DirectoryConfig, parse_directory_config
from .modules import ModuleConfig, parse_modules
from .server_notices import ServerNoticesConfig, parse_server_notices
from .consent import UserConsentConfig, parse_user_consent
from .media import MediaConfig, parse_media_config
from .profiles import ProfileConfig, parse_profile_config
from .oauth import OAuthConfig, parse_oauth_config
from .sessions import SessionConfig, parse_session_config
from .voip import TurnConfig, parse_turn_config
from .email import EmailConfig, parse_email_config
from .threepids import ThreepidConfig, parse_threepid_config
from .captcha import CaptchaConfig, parse_captcha_config
from .sso import SsoSections, parse_sso_sections
from .workers import WorkerConfig, parse_worker_config

__all__ = [
    "ConfigError",
    "HomeserverConfig",
    "ListenerConfig",
    "DatabaseConfig",
    "RateLimit",
    "load_config",
    "parse_config",
]

#: Resource names a listener may serve (Synapse's names).
RESOURCE_NAMES = frozenset(
    {"client", "federation", "keys", "media", "metrics", "health", "openid", "static", "consent",
     "replication"}
)
#: Resources implied by another, as in Synapse.
IMPLIED_RESOURCES = {
    "client": {"media", "static", "health"},
    "federation": {"media", "keys", "openid", "health"},
}

#: Keys Synapse has that we accept without acting on them (no warning).
ACCEPTED_IGNORED_KEYS = frozenset(
    {"report_stats", "pid_file", "log_config", "suppress_key_server_warning", "trusted_key_servers_warning"}
)



@dataclass(frozen=True)
class RateLimit:
    per_second: float
    burst_count: float


@dataclass(frozen=True)
class ListenerConfig:
    port: int
    bind_addresses: tuple[str, ...]
    type: str  # "http" or "metrics"
    tls: bool
    x_forwarded: bool
    resources: frozenset[str]
    tag: str | None = None


@dataclass(frozen=True)
class DatabaseConfig:
    engine: str  # "sqlite" or "postgres"
    args: dict[str, Any]

    @property
    def sqlite_path(self) -> str:
        return self.args["database"]


@dataclass(frozen=True)
class TrustedKeyServer:
    server_name: str
    verify_keys: dict[str, str] | None


@dataclass(frozen=True)
class FederationConfig:
    ip_range_blacklist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ip_range_whitelist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    federation_ip_range_blacklist: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    federation_domain_whitelist: frozenset[str] | None
    federation_verify_certificates: bool
    federation_custom_ca_list: tuple[str, ...]
    federation_certificate_verification_whitelist: tuple[str, ...]
    trusted_key_servers: tuple[TrustedKeyServer, ...]
    dns_nameservers: tuple[tuple[str, int], ...]
    destination_min_retry_interval_ms: int
    destination_retry_multiplier: float
    destination_max_retry_interval_ms: int
    #: ``experimental_features.faster_joins`` (Synapse's key): remote joins ask for
    #: partial state (send_join ``omit_members``) and fetch the rest in the background.
    faster_joins: bool = True
    #: ``federation_check_processes``: worker processes checking the events of big
    #: batches (a join's state and auth chain); 0: worker threads of this process;
    #: None: one per CPU core, at most 4.
    check_processes: int | None = 0


@dataclass(frozen=True)
class HomeserverConfig:
    config_path: str | None
    server_name: str
    public_baseurl: str
    listeners: tuple[ListenerConfig, ...]
    tls_certificate_path: str | None
    tls_private_key_path: str | None
    database: DatabaseConfig
    signing_key_path: str
    old_signing_keys: dict[str, dict[str, Any]]
    key_refresh_interval_ms: int
    serve_server_wellknown: bool
    extra_well_known_client_content: dict[str, Any]
    default_room_version: str
    enable_registration: bool
    enable_registration_without_verification: bool
    registration_requires_token: bool
    registration_shared_secret: str | None
    macaroon_secret_key: str | None
    form_secret: str | None
    max_request_body_size: int
    bcrypt_rounds: int
    custom_template_directory: str | None
    rate_limits: dict[str, RateLimit]
    federation: FederationConfig
    rc_federation: dict[str, int]
    #: ``send_federation``: this process sends transactions to other servers.
    send_federation: bool = True
    #: ``federation_tester.self_check_interval``: re-run the federation tester on our own
    #: server name this often (None: never), for the metrics and a warning when it fails.
    federation_tester_self_check_ms: int | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # Single sign-on (gateway/config/sso.py): oidc_providers, jwt_config, sso.
    sso: SsoSections = field(default_factory=SsoSections)
    # Room and user directories (gateway/config/directory.py).
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    # Pluggable modules (gateway/config/modules.py), in priority order.
    modules: tuple[ModuleConfig, ...] = ()
    # Server notices (gateway/config/server_notices.py); None when off.
    server_notices: ServerNoticesConfig | None = None
    # ``user_consent`` (gateway/config/consent.py); None when absent.
    user_consent: UserConsentConfig | None = None
    # The media repository (gateway/config/media.py): media_store_path, max_upload_size, ...
    media: MediaConfig = field(default_factory=MediaConfig)
    #: ``allow_guest_access`` (Synapse's key): ``/register?kind=guest`` gives guest accounts.
    allow_guest_access: bool = False
    #: ``enable_ephemeral_messages`` (Synapse's key): self-destructing events (MSC2228).
    enable_ephemeral_messages: bool = False
    # Who may read and change profiles (gateway/config/profiles.py).
    profiles: ProfileConfig = field(default_factory=ProfileConfig)
    #: ``password_config.pepper`` (Synapse's key): appended to passwords before bcrypt.
    password_pepper: str = ""
    # The OAuth 2.0 API (gateway/config/oauth.py); off by default.
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    # Lifetimes of legacy logins and refresh tokens (gateway/config/sessions.py).
    sessions: SessionConfig = field(default_factory=SessionConfig)
    # TURN servers for calls (gateway/config/voip.py): the turn_* keys.
    turn: TurnConfig = field(default_factory=TurnConfig)
    # Application services (gateway/config/appservice.py): app_service_config_files, ...
    appservice: AppServiceConfig = field(default_factory=AppServiceConfig)
    # Mail sending (gateway/config/email.py) and e-mail addresses on accounts (threepids.py).
    email: EmailConfig = field(default_factory=EmailConfig)
    threepids: ThreepidConfig = field(default_factory=ThreepidConfig)
    # The reCAPTCHA stage at registration (gateway/config/captcha.py).
    captcha: CaptchaConfig = field(default_factory=CaptchaConfig)
    # Worker processes (gateway/config/workers.py): worker_app, instance_map, redis, ...
    workers: WorkerConfig = field(default_factory=WorkerConfig)


def read_yaml(path: str) -> Any:
    """The YAML document in ``path``. Raises ConfigError (never a YAML stack trace)."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError("", f"{path} is not valid YAML: {e}") from None


def load_config(path: str | Sequence[str]) -> HomeserverConfig:
    """Read and validate ``path``, or several files merged: a later file's top-level keys
    replace an earlier one's, as with Synapse's repeated ``-c`` (the shared homeserver.yaml,
    then a worker's file). Relative paths are relative to the first file. Raises
    ConfigError (never a YAML stack trace)."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths:
        raise ConfigError("", "no config file given")
    merged: dict[str, Any] = {}
    for p in paths:
        data = read_yaml(p)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError("", f"{p}: expected a mapping of config keys")
        merged.update(data)
    return parse_config(merged, config_path=paths[0])


def parse_database_section(data: Any, *, config_path: str) -> DatabaseConfig:
    """Only the ``database`` section of a config (ours or Synapse's: the same keys), for the
    tools that need no more of it (``gateway port-db --postgres-config``)."""
    config_dir = os.path.dirname(os.path.abspath(config_path))
    return _parse_database(Section(data).section("database"),
                           lambda p: p if os.path.isabs(p) else os.path.join(config_dir, p))


def parse_config(data: Any, *, config_path: str | None = None) -> HomeserverConfig:
    root = Section(data)
    config_dir = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()

    def resolve_path(p: str) -> str:
        return p if os.path.isabs(p) else os.path.join(config_dir, p)

    server_name = root.str("server_name")
    _check_server_name(server_name)

    public_baseurl = root.str("public_baseurl", None)
    if public_baseurl is None:
        public_baseurl = f"https://{server_name}/"
    elif not public_baseurl.startswith(("http://", "https://")):
        raise ConfigError("public_baseurl", f"expected an http:// or https:// URL, got {public_baseurl!r}")
    if not public_baseurl.endswith("/"):
        public_baseurl += "/"

    listeners = tuple(
        _parse_listener(item, f"listeners[{i}]")
        for i, item in enumerate(root.list("listeners", []))
    )
    workers, worker_listeners = parse_worker_config(root, _parse_listener)
    if workers.is_worker:  # a worker serves its worker_listeners, not the main process's
        listeners = worker_listeners
    ports = [(a, li.port) for li in listeners for a in li.bind_addresses]
    if len(set(ports)) != len(ports):
        raise ConfigError("listeners", "two listeners bind the same address and port")

    tls_cert = root.str("tls_certificate_path", None)
    tls_key = root.str("tls_private_key_path", None)
    if any(li.tls for li in listeners):
        if not tls_cert or not tls_key:
            raise ConfigError(
                "tls_certificate_path",
                "a listener has tls: true, so tls_certificate_path and tls_private_key_path are required",
            )
    tls_cert = resolve_path(tls_cert) if tls_cert else None
    tls_key = resolve_path(tls_key) if tls_key else None

    database = _parse_database(root.section("database"), resolve_path)
    if workers.is_worker and database.engine != "postgres":
        raise ConfigError("database", "workers need PostgreSQL (database.name: psycopg2): SQLite serves one "
                                      "process only")

    signing_key_path = resolve_path(root.str("signing_key_path", f"{server_name}.signing.key"))
    old_signing_keys = _parse_old_signing_keys(root.section("old_signing_keys"))

    default_room_version = str(root.raw("default_room_version", "12"))
    if default_room_version not in KNOWN_ROOM_VERSIONS:
        raise ConfigError(
            "default_room_version",
            f"expected one of {', '.join(KNOWN_ROOM_VERSIONS)}, got {default_room_version!r}",
        )

    extra_wk = root.raw("extra_well_known_client_content", {})
    if not isinstance(extra_wk, dict):
        raise ConfigError("extra_well_known_client_content", "expected a mapping")

    rate_limits = _parse_rate_limits(root)
    rcf = root.section("rc_federation")
    rc_federation = {
        "window_size": rcf.int("window_size", 1000, minimum=1),
        "sleep_limit": rcf.int("sleep_limit", 10, minimum=0),
        "sleep_delay": rcf.int("sleep_delay", 500, minimum=0),
        "reject_limit": rcf.int("reject_limit", 50, minimum=0),
        "concurrent": rcf.int("concurrent", 3, minimum=1),
    }
    sections = [rcf]

    fed = _parse_federation(root, resolve_path)
    experimental = root.section("experimental_features")
    sections.append(experimental)
    fed = replace(fed, faster_joins=experimental.bool("faster_joins", True))

    registration_shared_secret = root.str("registration_shared_secret", None)
    secret_path = root.str("registration_shared_secret_path", None)
    if registration_shared_secret is None and secret_path:
        try:
            with open(resolve_path(secret_path), encoding="utf-8") as f:
                registration_shared_secret = f.read().strip()
        except OSError as e:
            raise ConfigError("registration_shared_secret_path", f"cannot read {secret_path}: {e.strerror}") from None

    password_config = root.section("password_config")
    sections.append(password_config)
    tester = root.section("federation_tester")
    sections.append(tester)
    self_check_ms = tester.duration_ms("self_check_interval", None)
    if self_check_ms is not None and self_check_ms < 60_000:
        raise ConfigError("federation_tester.self_check_interval", "expected at least 1m")
    config_kwargs = dict(
        config_path=config_path,
        server_name=server_name,
        public_baseurl=public_baseurl,
        listeners=listeners,
        tls_certificate_path=tls_cert,
        tls_private_key_path=tls_key,
        database=database,
        signing_key_path=signing_key_path,
        old_signing_keys=old_signing_keys,
        key_refresh_interval_ms=root.duration_ms("key_refresh_interval", 86_400_000),
        serve_server_wellknown=root.bool("serve_server_wellknown", False),
        extra_well_known_client_content=extra_wk,
        default_room_version=default_room_version,
        enable_registration=root.bool("enable_registration", False),
        enable_registration_without_verification=root.bool(
            "enable_registration_without_verification", False
        ),
        registration_requires_token=root.bool("registration_requires_token", False),
        allow_guest_access=root.bool("allow_guest_access", False),
        enable_ephemeral_messages=root.bool("enable_ephemeral_messages", False),
        registration_shared_secret=registration_shared_secret,
        macaroon_secret_key=root.str("macaroon_secret_key", None),
        form_secret=root.str("form_secret", None),
        max_request_body_size=root.size_bytes("max_request_body_size", 50 * 1024 * 1024),
        bcrypt_rounds=root.int("bcrypt_rounds", 12, minimum=4, maximum=31),
        password_pepper=password_config.str("pepper", ""),
        custom_template_directory=_parse_templates(root.section("templates"), resolve_path),
        rate_limits=rate_limits,
        federation=fed,
        rc_federation=rc_federation,
        send_federation=root.bool("send_federation", True),
        federation_tester_self_check_ms=self_check_ms,
        workers=workers,
    )
    sso_sections = parse_sso_sections(root, resolve_path, public_baseurl)
    config_kwargs["sso"] = sso_sections
    config_kwargs["directory"] = parse_directory_config(root, sections)
    config_kwargs["modules"] = parse_modules(root)
    config_kwargs["server_notices"], notice_warnings = parse_server_notices(root)
    config_kwargs["media"] = parse_media_config(root, resolve_path)
    config_kwargs["profiles"] = parse_profile_config(root)
    config_kwargs["user_consent"], consent_warnings = parse_user_consent(root, resolve_path)
    config_kwargs["oauth"], oauth_warnings = parse_oauth_config(root)
    config_kwargs["sessions"] = parse_session_config(root)
    config_kwargs["turn"], turn_warnings = parse_turn_config(root, resolve_path)
    config_kwargs["email"], email_warnings = parse_email_config(root)
    config_kwargs["threepids"] = parse_threepid_config(root)
    config_kwargs["captcha"] = parse_captcha_config(root)
    if config_kwargs["threepids"].registrations_require_3pid and not config_kwargs["email"].enabled:
        raise ConfigError("registrations_require_3pid", "e-mail addresses can only be validated with an email "
                          "section (an SMTP server to send the mails)")
    config_kwargs["appservice"], appservice_warnings = parse_appservice_config(root, experimental, server_name,
                                                                               resolve_path)
    notice_warnings = notice_warnings + consent_warnings + oauth_warnings + turn_warnings + appservice_warnings
    notice_warnings = notice_warnings + email_warnings
    for k in ACCEPTED_IGNORED_KEYS:
        root.used.add(k)
    warnings = list(sso_sections.warnings) + notice_warnings + [f"unknown config key {k!r} (ignored)" for k in root.unknown_keys()]
    for s in sections:
        warnings += [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
    if config_kwargs["enable_registration"] and not (
        config_kwargs["enable_registration_without_verification"]
        or config_kwargs["registration_requires_token"]
        or config_kwargs["threepids"].registrations_require_3pid
        or config_kwargs["captcha"].enable_registration_captcha
    ):
        raise ConfigError(
            "enable_registration",
            "open registration without verification is dangerous: also set "
            "enable_registration_without_verification: true, registration_requires_token: true, "
            "registrations_require_3pid: [email] or enable_registration_captcha: true",
        )
    return HomeserverConfig(**config_kwargs, warnings=tuple(warnings))


def _parse_templates(s: Section, resolve_path) -> str | None:
    """``templates.custom_template_directory``: must exist when given (checked at startup)."""
    directory = s.str("custom_template_directory", None)
    if directory is None:
        return None
    directory = resolve_path(directory)
    if not os.path.isdir(directory):
        raise ConfigError(s.key("custom_template_directory"), f"{directory} is not a directory")
    return directory


def _check_server_name(name: str) -> None:
    try:
        from federation.ids import parse_server_name
    except ImportError:  # pragma: no cover - the ids module ships with the package
        return
    try:
        parse_server_name(name)
    except ValueError as e:
        raise ConfigError("server_name", f"{name!r} is not a valid server name: {e}") from None


def _parse_listener(item: Any, path: str) -> ListenerConfig:
    s = Section(item, path)
    port = s.int("port", minimum=0, maximum=65535)
    ltype = s.str("type", "http", choices=("http", "metrics", "manhole"))
    bind = tuple(s.list("bind_addresses", ["::", "0.0.0.0"], of=string_item))
    for i, addr in enumerate(bind):
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ConfigError(f"{path}.bind_addresses[{i}]", f"expected an IP address, got {addr!r}") from None
    names: set[str] = set()
    for ri, res in enumerate(s.list("resources", [])):
        rs = Section(res, f"{path}.resources[{ri}]")
        for name in rs.list("names", of=string_item):
            if name not in RESOURCE_NAMES:
                raise ConfigError(
                    f"{path}.resources[{ri}].names",
                    f"unknown resource {name!r}; expected some of {', '.join(sorted(RESOURCE_NAMES))}",
                )
            names.add(name)
            names |= IMPLIED_RESOURCES.get(name, set())
        rs.bool("compress", False)
    if ltype == "metrics":
        names = {"metrics"}
    s.ignore("additional_resources")
    s.ignore("request_id_header")
    return ListenerConfig(
        port=port,
        bind_addresses=bind,
        type=ltype,
        tls=s.bool("tls", False),
        x_forwarded=s.bool("x_forwarded", False),
        resources=frozenset(names),
        tag=s.str("tag", None),
    )


def _parse_database(s: Section, resolve_path) -> DatabaseConfig:
    name = s.str("name", "sqlite3", choices=("sqlite3", "psycopg2", "postgresql", "postgres"))
    args = s.section("args")
    for k in ("txn_limit", "allow_unsafe_locale"):
        s.ignore(k)
    if name == "sqlite3":
        db = args.str("database", "homeserver.db")
        if db != ":memory:":
            db = resolve_path(db)
        return DatabaseConfig("sqlite", {"database": db})
    out: dict[str, Any] = {}
    for key in ("user", "password", "database", "host", "dbname"):
        if args.has(key):
            out[key] = args.str(key)
    if args.has("port"):
        port = args.raw("port")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ConfigError(args.key("port"), f"expected a port number, got {port!r}")
        out["port"] = port
    if "dbname" in out:
        out.setdefault("database", out.pop("dbname"))
    out["cp_min"] = args.int("cp_min", 5, minimum=1)
    out["cp_max"] = args.int("cp_max", 10, minimum=1)
    if out["cp_min"] > out["cp_max"]:
        raise ConfigError(args.key("cp_min"), "must not be larger than cp_max")
    # Ours: how long startup waits for PostgreSQL to accept connections (a container
    # started beside it, a database restarting) before giving up.
    out["connect_retry_ms"] = s.duration_ms("connect_retry_timeout", 60_000)
    return DatabaseConfig("postgres", out)


def _parse_old_signing_keys(s: Section) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key_id in list(s.data):
        entry = s.section(key_id)
        if not key_id.startswith("ed25519:"):
            raise ConfigError(s.key(key_id), "only ed25519 keys are supported (key ID ed25519:<version>)")
        key = entry.str("key")
        from federation.canonical_json import decode_base64

        try:
            raw = decode_base64(key)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ConfigError(entry.key("key"), "expected the unpadded base64 of a 32-byte ed25519 public key")
        out[key_id] = {"key": key, "expired_ts": entry.int("expired_ts", minimum=0)}
    return out


_RATE_LIMIT_DEFAULTS: dict[str, tuple[float, float]] = {
    "rc_message": (0.2, 10),
    "rc_registration": (0.17, 3),
    "rc_registration_token_validity": (0.1, 5),
    "rc_oauth_registration": (0.5, 20),
    "rc_login.address": (0.003, 5),
    "rc_login.account": (0.03, 5),
    "rc_login.failed_attempts": (0.17, 3),
    "rc_admin_redaction": (0.2, 10),
    "rc_joins.local": (0.1, 10),
    "rc_joins.remote": (0.01, 10),
    "rc_joins_per_room": (1, 10),
    "rc_3pid_validation": (0.003, 5),
    "rc_invites.per_room": (0.3, 10),
    "rc_invites.per_user": (0.003, 5),
    "rc_invites.per_issuer": (0.3, 10),
    "rc_third_party_invite": (0.2, 10),
    "rc_room_creation": (0.05, 10),
    "rc_presence.per_user": (0.1, 1),
    "rc_key_requests": (20, 100),
    "rc_media_create": (10, 50),
    "rc_delayed_event_mgmt": (1, 5),
    "rc_reports": (1, 5),
}


def _parse_rate_limits(root: Section) -> dict[str, RateLimit]:
    out: dict[str, RateLimit] = {}
    sections: dict[str, Section] = {}
    for dotted, (ps, bc) in _RATE_LIMIT_DEFAULTS.items():
        top, _, sub = dotted.partition(".")
        if top not in sections:
            sections[top] = root.section(top)
        s = sections[top]
        if sub:
            s = s.section(sub) if s.has(sub) else Section({}, s.key(sub))
            sections[top].used.add(sub)
        if top == "rc_admin_redaction" and not root.has(top):
            out[dotted] = out.get("rc_message", RateLimit(ps, bc))
            continue
        out[dotted] = RateLimit(
            per_second=s.number("per_second", ps, minimum=0),
            burst_count=s.number("burst_count", bc, minimum=0),
        )
    return out


def _parse_networks(values: list[str], path: str):
    nets = []
    for i, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ConfigError(f"{path}[{i}]", f"expected an IP range like 10.0.0.0/8, got {v!r}") from None
    return tuple(nets)


def _parse_federation(root: Section, resolve_path) -> FederationConfig:
    blacklist = root.list("ip_range_blacklist", list(DEFAULT_IP_RANGE_BLACKLIST), of=string_item)
    whitelist = root.list("ip_range_whitelist", [], of=string_item)
    fed_blacklist = root.list("federation_ip_range_blacklist", None, of=string_item)
    domain_whitelist = root.list("federation_domain_whitelist", None, of=string_item)
    trusted: list[TrustedKeyServer] = []
    for i, item in enumerate(root.list("trusted_key_servers", [])):
        ts = Section(item, f"trusted_key_servers[{i}]")
        name = ts.str("server_name")
        vk = ts.section("verify_keys")
        keys = {k: vk.str(k) for k in list(vk.data)} or None
        ts.bool("accept_keys_insecurely", False)
        trusted.append(TrustedKeyServer(name, keys))
    nameservers = []
    for i, ns in enumerate(root.list("dns_nameservers", [], of=string_item)):
        host, _, port = ns.rpartition(":") if ns.count(":") == 1 or ns.startswith("[") else (ns, "", "53")
        host = host.strip("[]") or ns
        try:
            ipaddress.ip_address(host)
            nameservers.append((host, int(port or 53)))
        except ValueError:
            raise ConfigError(f"dns_nameservers[{i}]", f"expected IP[:port], got {ns!r}") from None
    fs = root.section("federation")
    retry = dict(
        destination_min_retry_interval_ms=fs.duration_ms("destination_min_retry_interval", 600_000),
        destination_retry_multiplier=fs.number("destination_retry_multiplier", 2.0, minimum=1),
        destination_max_retry_interval_ms=fs.duration_ms("destination_max_retry_interval", 86_400_000),
    )
    for k in ("client_timeout", "max_short_retry_delay", "max_long_retry_delay", "max_short_retries",
              "max_long_retries"):
        fs.ignore(k)
    return FederationConfig(
        ip_range_blacklist=_parse_networks(blacklist, "ip_range_blacklist"),
        ip_range_whitelist=_parse_networks(whitelist, "ip_range_whitelist"),
        federation_ip_range_blacklist=_parse_networks(
            fed_blacklist if fed_blacklist is not None else blacklist, "federation_ip_range_blacklist"
        ),
        federation_domain_whitelist=frozenset(domain_whitelist) if domain_whitelist is not None else None,
        federation_verify_certificates=root.bool("federation_verify_certificates", True),
        federation_custom_ca_list=tuple(
            resolve_path(p) for p in root.list("federation_custom_ca_list", [], of=string_item)
        ),
        federation_certificate_verification_whitelist=tuple(
            root.list("federation_certificate_verification_whitelist", [], of=string_item)
        ),
        trusted_key_servers=tuple(trusted),
        dns_nameservers=tuple(nameservers),
        check_processes=root.int("federation_check_processes", None, minimum=0, maximum=64),
        **retry,
    )
