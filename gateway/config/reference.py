"""``gateway config-reference``: docs/config.md, generated from the parsers themselves.

Every typed getter of ``Section`` (gateway/config/_values.py) reports what it reads while
``recording_reads`` is active. This module parses a minimal config, then the minimal config
with each sample part of ``sample_parts`` added (together they switch on every section),
and lists every key read: its path (``[]`` for list items), type, default and allowed
values, with the short descriptions of gateway/config/descriptions.py. A key added to a
parser appears after regeneration, described or not. Sections read only when present
(``if root.has(...)``) are also parsed once as an empty mapping, so their keys appear even
before a sample part exists for them; a section that reads nothing until it is enabled
needs a sample part here (tests/gateway/config/test_reference.py says which).
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import ACCEPTED_IGNORED_KEYS, ConfigError, parse_config
from ._values import KeyRead, recording_reads
from .descriptions import DESCRIPTIONS, GROUPS

__all__ = ["REFRESH_COMMAND", "KeyDoc", "collect_keys", "render_reference", "sample_parts", "MINIMAL"]

REFRESH_COMMAND = ".cache/venv/bin/python -m gateway config-reference -o docs/config.md"
REQUIRED = "required"

MINIMAL: dict[str, Any] = {"server_name": "example.com"}


def sample_parts(tmp: str) -> dict[str, dict[str, Any]]:
    """Config fragments that switch on every section; files they name are created in ``tmp``.

    Each part is parsed on its own on top of ``MINIMAL``; keys that exclude each other
    (``client_secret`` and ``client_secret_path``...) go in different parts.
    """

    def write(name: str, text: str = "x") -> str:
        path = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    write("policy/en/1.0.html", "<p>policy</p>")
    os.makedirs(os.path.join(tmp, "templates"), exist_ok=True)
    mapping = {"module": "sso.mapping.JinjaOidcMappingProvider",
               "config": {"localpart_template": "{{ user.preferred_username }}"}}
    oidc = {
        "idp_id": "keycloak", "idp_name": "Keycloak", "idp_icon": "mxc://example.com/icon", "idp_brand": "keycloak",
        "discover": True, "issuer": "https://id.example.com/realms/main", "client_id": "gateway",
        "client_secret": "s", "client_auth_method": "client_secret_post", "pkce_method": "always",
        "scopes": ["openid", "profile"], "authorization_endpoint": "https://id.example.com/auth",
        "token_endpoint": "https://id.example.com/token", "userinfo_endpoint": "https://id.example.com/userinfo",
        "jwks_uri": "https://id.example.com/jwks", "skip_verification": False,
        "user_profile_method": "userinfo_endpoint", "allow_existing_users": True, "enable_registration": True,
        "attribute_requirements": [{"attribute": "groups", "value": "matrix"},
                                   {"attribute": "realm", "one_of": ["a", "b"]}],
        "user_mapping_provider": mapping, "backchannel_logout_enabled": True,
        "backchannel_logout_ignore_sub": False,
        "additional_authorization_parameters": {"<parameter>": "value"},
        "passthrough_authorization_parameters": ["login_hint"],
    }
    jwt_key = {"jwt_header": {"alg": "ES256", "kid": "k"}, "jwt_payload": {"iss": "gateway"}}
    saml_config_py = write("saml_config.py", "CONFIG = {}\n")
    return {
        "minimal": {},
        "core": {
            "public_baseurl": "https://matrix.example.com/",
            "listeners": [
                {"port": 8448, "type": "http", "tls": True, "x_forwarded": True, "tag": "main",
                 "bind_addresses": ["::"], "additional_resources": {}, "request_id_header": "X-Request-ID",
                 "resources": [{"names": ["client", "federation"], "compress": False}]},
                {"port": 9000, "type": "metrics", "bind_addresses": ["127.0.0.1"]},
            ],
            "tls_certificate_path": "cert.pem", "tls_private_key_path": "key.pem",
            "database": {"name": "sqlite3", "args": {"database": "homeserver.db"}, "txn_limit": 0},
            "old_signing_keys": {"ed25519:<version>": {"key": "A" * 43, "expired_ts": 1}},
            "templates": {"custom_template_directory": os.path.join(tmp, "templates")},
            "trusted_key_servers": [{"server_name": "matrix.org", "verify_keys": {"ed25519:<version>": "k"},
                                     "accept_keys_insecurely": False}],
            "dns_nameservers": ["127.0.0.1:53"],
            "enable_registration": True, "registration_requires_token": True,
            "sso": {"client_whitelist": ["https://app.example.com/"]},
        },
        "postgres": {"database": {"name": "psycopg2", "args": {
            "user": "gateway", "password": "secret", "database": "gateway", "dbname": "gateway",
            "host": "127.0.0.1", "port": 5432, "cp_min": 5, "cp_max": 10}, "allow_unsafe_locale": False}},
        "shared_secret_file": {"registration_shared_secret_path": write("shared_secret")},
        "rate_limit_subsections": {k: {sub: {} for sub in subs} for k, subs in (
            ("rc_login", ("address", "account", "failed_attempts")), ("rc_joins", ("local", "remote")),
            ("rc_invites", ("per_room", "per_user", "per_issuer")), ("rc_presence", ("per_user",)))}
        | {"rc_admin_redaction": {}},
        "oidc": {"oidc_providers": [
            oidc,
            {"idp_id": "google", "issuer": "https://accounts.example.com/", "client_id": "c",
             "client_secret_path": write("client_secret")},
            {"idp_id": "apple", "issuer": "https://apple.example.com/", "client_id": "c",
             "client_secret_jwt_key": {"key": "PEM", **jwt_key}},
            {"idp_id": "apple2", "issuer": "https://apple.example.com/", "client_id": "c",
             "client_secret_jwt_key": {"key_file": write("key.pem", "PEM"), **jwt_key}},
        ]},
        "saml": {"saml2_config": {
            "enabled": True, "sp_config": {}, "config_path": saml_config_py, "saml_session_lifetime": "15m",
            "user_mapping_provider": {"module": "sso.mapping.DefaultSamlMappingProvider",
                                      "config": {"mxid_source_attribute": "uid", "mxid_mapping": "dotreplace"}},
            "mxid_source_attribute": "uid", "mxid_mapping": "hexencode",
            "grandfathered_mxid_source_attribute": "uid",
            "attribute_requirements": [{"attribute": "userGroup", "value": "staff"}],
            "idp_entityid": "https://idp.example.com/metadata", "idp_name": "SAML", "idp_icon": "mxc://e.com/i",
            "idp_brand": "saml", "enable_registration": True}},
        "cas": {"cas_config": {
            "enabled": True, "server_url": "https://cas.example.com/cas", "protocol_version": 3,
            "displayname_attribute": "name", "required_attributes": {"department": "IT"},
            "idp_name": "CAS", "idp_icon": "mxc://e.com/i", "idp_brand": "cas", "enable_registration": True}},
        "jwt": {"jwt_config": {"enabled": True, "secret": "s", "algorithm": "HS256", "subject_claim": "sub",
                               "display_name_claim": "name", "issuer": "https://issuer.example.com",
                               "audiences": ["gateway"], "login_url": "https://portal.example.com/matrix",
                               "idp_name": "Staff portal"}},
        "jwt_secret_file": {"jwt_config": {"enabled": True, "secret_path": write("jwt_secret"),
                                           "algorithm": "HS256"}},
        "consent": {"form_secret": "f", "user_consent": {
            "template_dir": os.path.join(tmp, "policy"), "version": "1.0", "require_at_registration": True,
            "policy_name": "Privacy Policy", "server_notice_content": {}, "send_server_notice_to_guests": False,
            "block_events_error": "x"}},
        "server_notices": {"server_notices": {
            "system_mxid_localpart": "notices", "system_mxid_display_name": "Notices",
            "system_mxid_avatar_url": "mxc://e.com/a", "room_name": "Notices", "room_avatar_url": "mxc://e.com/r",
            "room_topic": "t", "auto_join": True}},
        "directory": {
            "room_list_publication_rules": [{"user_id": "*", "alias": "*", "room_id": "*", "action": "allow"}],
            "alias_creation_rules": [{"user_id": "*", "alias": "*", "room_id": "*", "action": "allow"}],
            "user_directory": {"enabled": True}},
        "media": {"thumbnail_sizes": [{"width": 32, "height": 32, "method": "crop"}],
                  "url_preview_enabled": True, "url_preview_ip_range_blacklist": ["10.0.0.0/8"]},
        "modules": {"modules": [{"module": "example.Module", "config": {}}]},
        "email": {"email": {
            "smtp_host": "mail.example.com", "smtp_port": 587, "smtp_user": "gateway", "smtp_pass": "secret",
            "force_tls": False, "require_transport_security": True, "enable_tls": True,
            "notif_from": "%(app)s <noreply@example.com>", "app_name": "Matrix", "enable_notifs": True,
            "notif_for_new_users": True, "client_base_url": "https://app.example.com/",
            "validation_token_lifetime": "1h", "invite_client_location": "https://app.example.com/",
            "subjects": {}}},
        "threepids": {"allowed_local_3pids": [{"medium": "email", "pattern": "@example\\.com$"}],
                      "next_link_domain_whitelist": ["app.example.com"]},
        "workers": {
            "database": {"name": "psycopg2", "args": {"database": "gateway"}},
            "worker_app": "synapse.app.generic_worker", "worker_name": "client_reader1",
            "worker_listeners": [{"port": 8083, "type": "http", "tls": False, "x_forwarded": True, "tag": "w",
                                  "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}],
            "worker_log_config": "log.yaml",
            "instance_map": {"<name>": {"host": "127.0.0.1", "port": 9093, "tls": False}},
            "worker_replication_secret": "secret",
            "redis": {"enabled": True, "host": "localhost", "port": 6379, "password": "p", "dbid": 0,
                      "use_tls": False, "channel_prefix": "gateway/example.com"},
            "stream_writers": {"events": "main"},
            "federation_sender_instances": ["sender1"], "pusher_instances": ["pusher1"],
        },
        "old_worker_replication": {"worker_replication_host": "127.0.0.1", "worker_replication_http_port": 9093},
        "oauth": {"oauth": {"enabled": True, "static_clients": [{
            "client_id": "element", "client_name": "Element", "client_uri": "https://app.example.com/",
            "redirect_uris": ["https://app.example.com/"]}]}},
    }


@dataclass
class KeyDoc:
    """What the reference says about one key."""

    path: str
    kind: str
    default: Any = None  # REQUIRED, or the default value
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    reads: list[KeyRead] = field(default_factory=list, repr=False)

    @property
    def top(self) -> str:
        return re.split(r"[.\[]", self.path, maxsplit=1)[0]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(copy.deepcopy(extra))
    return out


def collect_keys() -> list[KeyDoc]:
    """Every key the parsers read, in the order they are first read."""
    reads: dict[str, list[KeyRead]] = {}

    def record(r: KeyRead) -> None:
        reads.setdefault(r.path, []).append(r)

    with tempfile.TemporaryDirectory() as tmp, recording_reads(record):
        config_path = os.path.join(tmp, "homeserver.yaml")

        def parse(name: str, part: dict[str, Any]) -> None:
            try:
                parse_config(_merge(MINIMAL, part), config_path=config_path)
            except ConfigError as e:
                raise ConfigError("", f"the sample part {name!r} of gateway/config/reference.py "
                                      f"no longer parses: {e}") from None

        for name, part in sample_parts(tmp).items():
            parse(name, part)
        # Sections read only when present (``if root.has(...)``): parse them empty.
        for path, rs in list(reads.items()):
            if "." not in path and "[" not in path and all(r.kind == "probe" for r in rs):
                try:
                    parse_config(_merge(MINIMAL, {path: {}}), config_path=config_path)
                except ConfigError:
                    pass
    for key in sorted(ACCEPTED_IGNORED_KEYS):
        reads.setdefault(key, []).append(KeyRead(key, "ignored"))
    return [doc for path, rs in reads.items() if (doc := _key_doc(path, rs, reads)) is not None]


def _key_doc(path: str, rs: list[KeyRead], all_reads: dict[str, list[KeyRead]]) -> KeyDoc | None:
    typed = [r for r in rs if r.kind not in ("probe", "any")]
    untyped = [r for r in rs if r.kind == "any"]
    if not typed and not untyped:
        return None  # only asked whether it is there
    first = (typed or untyped)[0]
    kind = first.kind
    if kind == "any":
        kind = _kind_of_value(next((r.value for r in rs if r.value is not None), first.default))
    has_children = any(p.startswith((path + ".", path + "[]")) for p in all_reads)
    if kind == "list" and has_children:
        kind = "list of mappings"
    default = first.default
    if default is ...:
        # A getter that requires the key, called only after ``has`` said it is there: optional.
        default = None if any(r.kind == "probe" for r in rs) else REQUIRED
    return KeyDoc(path, kind, default, first.choices, first.minimum, first.maximum, rs)


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for t, name in ((dict, "mapping"), (list, "list"), (str, "string"), (int, "integer"), (float, "number")):
        if isinstance(value, t):
            return name
    return "any"


# --- rendering ---------------------------------------------------------------------------

_UNITS_MS = (("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000),
             ("m", 60_000), ("s", 1000))


def _duration(ms: int) -> str:
    for unit, size in _UNITS_MS:
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _size(n: int) -> str:
    for unit, size in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if n and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_default(doc: KeyDoc) -> str:
    d = doc.default
    if d == REQUIRED:
        return "**required**"
    if d is None or doc.kind == "ignored":
        return ""
    if doc.kind == "duration" and isinstance(d, int):
        return f"`{_duration(d)}`"
    if doc.kind == "size" and isinstance(d, int):
        return f"`{_size(d)}`"
    if isinstance(d, (list, tuple)) and len(d) > 3:
        return f"{len(d)} entries"
    if isinstance(d, str):  # defaults derived from the sample's server name
        d = d.replace(MINIMAL["server_name"], "<server_name>")
    text = yaml.safe_dump(d, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("...").strip()
    return f"`{text}`"


def render_type(doc: KeyDoc) -> str:
    if doc.kind == "ignored":
        return "accepted, ignored"
    out = doc.kind
    if doc.choices:
        out += ": " + ", ".join(f"`{c}`" for c in doc.choices)
    if doc.minimum is not None and doc.maximum is not None:
        out += f" ({doc.minimum:g} to {doc.maximum:g})"
    elif doc.minimum is not None:
        out += f" (at least {doc.minimum:g})"
    return out


def _blocks(docs: list[KeyDoc]) -> list[tuple[str, list[KeyDoc]]]:
    """(heading, keys): plain top-level keys first, then one block per section or group."""
    by_top: dict[str, list[KeyDoc]] = {}
    for doc in docs:
        by_top.setdefault(doc.top, []).append(doc)
    plain: list[KeyDoc] = []
    blocks: dict[str, list[KeyDoc]] = {}
    for top, members in by_top.items():
        group = next((title for prefix, title in GROUPS if top.startswith(prefix)), None)
        if group is not None:
            blocks.setdefault(group, []).extend(members)
        elif len(members) == 1 and members[0].path == top:  # a value, or a mapping of free-form content
            plain.append(members[0])
        else:
            blocks.setdefault(f"`{top}`", []).extend(members)
    return [("Top-level keys", plain), *blocks.items()]


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9_ -]", "", heading.lower()).replace(" ", "-")


def render_reference(docs: list[KeyDoc] | None = None) -> str:
    docs = collect_keys() if docs is None else docs
    blocks = _blocks(docs)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the parsers in gateway/config/ by `gateway config-reference`; do not edit.",
        f"     Refresh it with: {REFRESH_COMMAND} -->",
        "",
        "Every key `homeserver.yaml` may hold, as the parsers in `gateway/config/` read it: this page is",
        "generated from them (`gateway config-reference`), and a test fails when it is out of date.",
        "Key names are Synapse's wherever Gateway has the same feature.",
        "",
        "- Paths are dotted; `[]` stands for every item of a list (`listeners[].port`), and a name in",
        "  `<angle brackets>` for a name you choose.",
        "- Durations take a number of milliseconds or a string such as `30s`, `5m`, `1d`;",
        "  sizes a number of bytes or a string such as `50M`.",
        "- An empty default means the key is unset unless you set it. \"accepted, ignored\": a",
        "  Synapse key Gateway accepts without acting on it (no warning).",
        "- Unknown keys are logged as warnings; a wrong value stops startup with a message naming",
        "  the key. `gateway check-config -c homeserver.yaml` checks a file without starting.",
        "",
        "Sections: " + ", ".join(f"[{h.strip('`')}](#{_anchor(h)})" for h, _ in blocks),
        "",
    ]
    for heading, members in blocks:
        lines += [f"## {heading}", "", "| key | type | default | description |", "| --- | --- | --- | --- |"]
        for doc in members:
            description = DESCRIPTIONS.get(doc.path, "")
            lines.append(f"| `{_cell(doc.path)}` | {_cell(render_type(doc))} | {_cell(render_default(doc))} "
                         f"| {_cell(description)} |")
        lines.append("")
    return "\n".join(lines)
