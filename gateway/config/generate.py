"""``gateway generate-config``: a commented homeserver.yaml for a new server."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

_TEMPLATE = """\
# Gateway homeserver configuration.
# Key names follow Synapse's configuration manual wherever Gateway has the same feature.

# The domain part of your users' IDs (@alice:{server_name}). Cannot be changed later.
server_name: "{server_name}"

# The URL clients (and SSO identity providers) use to reach this server.
public_baseurl: "{public_baseurl}"

listeners:
  # Plain HTTP for clients and federation; put a TLS reverse proxy in front of it,
  # or set tls: true and the tls_* paths below.
  - port: {port}
    type: http
    tls: false
    x_forwarded: false
    bind_addresses: ['{bind_address}']
    resources:
      - names: [client, federation]

# tls_certificate_path: "/path/to/fullchain.pem"
# tls_private_key_path: "/path/to/privkey.pem"

{database_section}
# ed25519 key used to sign events and federation requests (Synapse's key file format).
signing_key_path: "{signing_key_path}"

# Uploaded files and the cache of other servers' media.
media_store_path: "{media_store_path}"
max_upload_size: 50M

# Keys this server used to sign with before (published as old_verify_keys).
# old_signing_keys:
#   "ed25519:id": {{key: "base64string", expired_ts: 123456789123}}

# How long our published keys are valid for.
key_refresh_interval: 1d

# Serve /.well-known/matrix/server pointing other servers at public_baseurl's host:443.
serve_server_wellknown: false

# Room version for new rooms.
default_room_version: "12"

# Registration is closed by default. Use `gateway register-user` to create accounts.
enable_registration: false
# Guest accounts (POST /register?kind=guest): they may read world-readable rooms and join
# rooms whose m.room.guest_access is can_join.
allow_guest_access: false
registration_shared_secret: "{registration_shared_secret}"

macaroon_secret_key: "{macaroon_secret_key}"
form_secret: "{form_secret}"

# Servers we may ask for other servers' keys. Empty: always ask each server directly.
trusted_key_servers: []

# Profiles. Anyone may read a user's display name and avatar unless
# require_auth_for_profile_requests is true; limit_profile_requests_to_users_who_share_rooms
# keeps them to users sharing a room; other servers may ask for our users' profiles unless
# allow_profile_lookup_over_federation is false; invites carry the invitee's profile unless
# include_profile_data_on_invite is false.
# require_auth_for_profile_requests: false
# limit_profile_requests_to_users_who_share_rooms: false
# allow_profile_lookup_over_federation: true
# include_profile_data_on_invite: true

# Rate limits, as in Synapse, e.g.:
# rc_message:
#   per_second: 0.2
#   burst_count: 10
"""


_SQLITE = """\
database:
  # SQLite is the default. For PostgreSQL use:
  #   name: psycopg2
  #   args: {{user: gateway, password: secret, database: gateway, host: 127.0.0.1, port: 5432}}
  name: sqlite3
  args:
    database: "{path}"
"""

_POSTGRES = """\
database:
  name: psycopg2
  args:
    user: "{user}"
    password: "{password}"
    database: "{database}"
    host: "{host}"
    port: {port}
    cp_min: 5
    cp_max: 10
  # How long startup waits for PostgreSQL to accept connections.
  connect_retry_timeout: 60s
"""


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int = 5432
    user: str = "gateway"
    password: str = ""
    database: str = "gateway"


def _q(s: str) -> str:  # values are placed inside double quotes
    return s.replace("\\", "\\\\").replace('"', '\\"')


def render_config(
    *, server_name: str, data_dir: str, port: int = 8008, public_baseurl: str | None = None,
    bind_address: str = "127.0.0.1", postgres: PostgresSettings | None = None,
) -> str:
    if postgres is None:
        database_section = _SQLITE.format(path=_q(os.path.join(data_dir, "homeserver.db")))
    else:
        database_section = _POSTGRES.format(host=_q(postgres.host), port=int(postgres.port), user=_q(postgres.user),
                                            password=_q(postgres.password), database=_q(postgres.database))
    return _TEMPLATE.format(
        server_name=_q(server_name),
        public_baseurl=_q(public_baseurl or f"http://localhost:{port}/"),
        port=port,
        bind_address=_q(bind_address),
        database_section=database_section,
        signing_key_path=_q(os.path.join(data_dir, f"{server_name.replace(':', '_')}.signing.key")),
        media_store_path=_q(os.path.join(data_dir, "media_store")),
        registration_shared_secret=secrets.token_urlsafe(32),
        macaroon_secret_key=secrets.token_urlsafe(32),
        form_secret=secrets.token_urlsafe(32),
    )
