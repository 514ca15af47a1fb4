"""Short descriptions for docs/config.md (gateway/config/reference.py generates the rest).

Keys are the reference's paths (``[]`` for list items). A key missing here is still listed;
a description whose key no parser reads any more fails tests/gateway/config/test_reference.py.
"""

from __future__ import annotations

#: Top-level keys starting with a prefix share one section of the reference.
GROUPS: tuple[tuple[str, str], ...] = (("rc_", "Rate limits"),)

_RC = ("A token bucket: `per_second` is the steady rate, `burst_count` how many may come at once. "
       "Over the limit a request gets 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`.")
_NOT_APPLIED = "Accepted with Synapse's default; not applied yet."

DESCRIPTIONS: dict[str, str] = {
    # --- the server -------------------------------------------------------------------
    "server_name": "The domain of your users' IDs (`@alice:example.com`) and of your rooms. It cannot change "
                   "once users exist: other servers know you by it.",
    "public_baseurl": "The URL clients and identity providers reach this server at (behind a reverse proxy: "
                      "the proxy's URL). Default `https://<server_name>/`. SSO callbacks, the SAML entity ID, "
                      "`/.well-known/matrix/client` and `/.well-known/matrix/server` are built from it.",
    "listeners": "The ports the server listens on, each serving some resources.",
    "listeners[].port": "TCP port.",
    "listeners[].type": "`http` serves the resources listed; `metrics` serves only Prometheus metrics; "
                        "`manhole` is not supported (a warning, then skipped).",
    "listeners[].bind_addresses": "IP addresses to bind (not host names).",
    "listeners[].resources": "Groups of resources, as in Synapse.",
    "listeners[].resources[].names": "`client` (/_matrix/client, /_synapse/client, /_synapse/admin, the "
                                     "federation tester), `federation` (/_matrix/federation; implies "
                                     "`keys`, `media`), `keys` (/_matrix/key), `media`, `consent`, "
                                     "`metrics`, `health` (/health is on every http listener anyway); "
                                     "`openid`, `static` and `replication` are accepted.",
    "listeners[].resources[].compress": "Accepted; responses are not compressed.",
    "listeners[].tls": "Serve HTTPS on this port with `tls_certificate_path` and `tls_private_key_path`.",
    "listeners[].x_forwarded": "Behind a reverse proxy: take the client's address from `X-Forwarded-For` and "
                               "the scheme from `X-Forwarded-Proto`. Only enable it when the port is reachable "
                               "from the proxy alone.",
    "listeners[].tag": "Name of the listener in the access log and metrics (default: the port).",
    "tls_certificate_path": "PEM certificate chain for `tls: true` listeners (relative paths are relative to "
                            "the config file, as every path here).",
    "tls_private_key_path": "PEM private key for `tls: true` listeners.",
    "database": "Where everything is stored: SQLite (the default, for small servers and tests) or "
                "PostgreSQL.",
    "database.name": "`sqlite3`, or `psycopg2` (also spelled `postgresql`, `postgres`) for PostgreSQL.",
    "database.args": "Connection arguments.",
    "database.args.database": "SQLite: the database file. PostgreSQL: the database name.",
    "database.args.user": "PostgreSQL user.",
    "database.args.password": "PostgreSQL password.",
    "database.args.host": "PostgreSQL host name, address or Unix socket directory.",
    "database.args.port": "PostgreSQL port (5432 when unset).",
    "database.args.dbname": "Another spelling of `database` (for PostgreSQL).",
    "database.args.cp_min": "Fewest PostgreSQL connections kept open.",
    "database.args.cp_max": "Most PostgreSQL connections open at once.",
    "database.connect_retry_timeout": "Ours: how long startup keeps retrying to reach PostgreSQL (a database "
                                      "starting beside the server) before it gives up.",
    "signing_key_path": "The server's ed25519 signing key (Synapse's file format, created if missing). Back "
                        "it up: other servers remember it.",
    "old_signing_keys": "Keys the server signed with before, published as `old_verify_keys` so that old "
                        "events stay verifiable.",
    "old_signing_keys.ed25519:<version>": "One old key, by key ID.",
    "old_signing_keys.ed25519:<version>.key": "The public key, unpadded base64.",
    "old_signing_keys.ed25519:<version>.expired_ts": "When it stopped being used (milliseconds since 1970).",
    "key_refresh_interval": "How long other servers may cache our published keys.",
    "serve_server_wellknown": "Serve `/.well-known/matrix/server` pointing other servers at the host and port "
                              "of `public_baseurl` (docs/reverse-proxy.md).",
    "extra_well_known_client_content": "Extra fields for `/.well-known/matrix/client` (`m.homeserver` is always "
                                       "set from `public_baseurl`).",
    "default_room_version": "Room version of new rooms.",
    "enable_registration": "Let anyone create an account with `/register`. Refused on its own: also set "
                           "`enable_registration_without_verification` or `registration_requires_token`.",
    "enable_registration_without_verification": "Allow open registration with no token and no e-mail check.",
    "registration_requires_token": "Registration needs a token made with the registration tokens admin API.",
    "allow_guest_access": "Let anyone get a guest account with `/register?kind=guest`: guests may read "
                          "world-readable rooms and join rooms whose `m.room.guest_access` is `can_join`.",
    "enable_ephemeral_messages": "Self-destructing messages (MSC2228): an event whose content has "
                                 "`org.matrix.self_destruct_after` (ms since the epoch) has its content pruned, "
                                 "as by a redaction, once that time has passed.",
    "enable_registration_captcha": "Registering needs a reCAPTCHA (the `m.login.recaptcha` stage) before the "
                                   "other stages; needs `recaptcha_public_key` and `recaptcha_private_key`.",
    "recaptcha_public_key": "The reCAPTCHA site key, given to clients to show the captcha.",
    "recaptcha_private_key": "The reCAPTCHA secret key, sent with each answer to `recaptcha_siteverify_api`. With "
                             "both keys set, a registration may complete the captcha stage even when it is not "
                             "required, as with Synapse.",
    "recaptcha_siteverify_api": "Where captcha answers are checked.",
    "registration_shared_secret": "Secret for `/_synapse/admin/v1/register` (create users, admins included, "
                                  "from scripts). Unset: that API is off.",
    "registration_shared_secret_path": "A file holding `registration_shared_secret`.",
    "macaroon_secret_key": "Accepted (Synapse signs tokens with it); Gateway's tokens are random and stored, "
                           "so nothing uses it yet.",
    "form_secret": "Secret of the per-user consent links (`/_matrix/consent?u=...&h=...`).",
    "max_request_body_size": "Largest request body outside uploads (those have `max_upload_size`).",
    "bcrypt_rounds": "bcrypt cost of new password hashes.",
    "password_config": "How passwords are stored.",
    "password_config.pepper": "A secret appended to every password before it is hashed (and checked), as in "
                              "Synapse: changing it makes every stored password fail. Keep Synapse's value when "
                              "importing a Synapse deployment.",
    "templates": "Your own page templates.",
    "templates.custom_template_directory": "A directory of templates that replace ours one file at a time "
                                           "(docs/sso.md#templates). Must exist at startup.",
    "experimental_features": "Switches for features that are still settling.",
    "experimental_features.msc2409_to_device_messages_enabled": "To-device messages for the users of an "
        "application service that receives ephemeral events go to it in its transactions "
        "(`de.sorunome.msc2409.to_device`), as in Synapse. docs/appservices.md.",
    "experimental_features.msc3202_transaction_extensions": "Application services whose registration has "
        "`org.matrix.msc3202: true` get device list changes and one-time key counts in their transactions. "
        "docs/appservices.md.",
    "experimental_features.msc3202_device_masquerading": "Accepted for Synapse configs; services may always "
        "name a device with `device_id` (or `org.matrix.msc3202.device_id`).",
    "experimental_features.faster_joins": "Remote joins ask for partial state and fetch the members in the "
                                          "background (docs/faster-joins.md).",
    "federation_check_processes": "Ours: worker processes that check the events of big batches (a join's "
        "state and auth chain: format, signatures, hashes) on every core, started as a remote join begins and "
        "stopped after 2 minutes without work; `0`: threads of the server process instead (one core for the "
        "Python part). Default: the CPU cores, at most 4.",
    "send_federation": "This process sends events and EDUs to other servers.",
    "federation_tester": "Gateway's own: the federation tester checking this server.",
    "federation_tester.self_check_interval": "Run the federation tester on this server's own `server_name` this "
                                             "often (at least `1m`; e.g. `1h`), from the server itself: the "
                                             "result and its age are Prometheus metrics "
                                             "(`gateway_federation_tester_self_*`), a warning is logged when it "
                                             "turns bad, and `/_gateway/federation-tester/api/self` answers the "
                                             "last report. Unset: never. Testing from inside your network does "
                                             "not prove others reach you: see docs/reverse-proxy.md.",
    # --- worker processes (gateway/config/workers.py, docs/workers.md) ------------------
    "worker_app": "Set in a worker's own file (the second `--config-path`): `gateway.app.generic_worker`, or "
                  "Synapse's `synapse.app.generic_worker` (its older single-purpose apps are accepted as "
                  "generic workers). Absent: this is the main process. Workers need PostgreSQL and Redis.",
    "worker_name": "The worker's instance name, used in `instance_map`, `stream_writers`, "
                   "`federation_sender_instances` and friends (`main` is the main process).",
    "worker_listeners": "A worker's listeners (same keys as `listeners`; a worker ignores `listeners`).",
    "worker_listeners[].port": "TCP port.",
    "worker_listeners[].type": "`http` or `metrics`.",
    "worker_listeners[].bind_addresses": "IP addresses to bind.",
    "worker_listeners[].resources": "Groups of resources: `client`, `federation`, `media`, `replication`, "
                                    "`health`, `metrics`, ... as for `listeners`.",
    "worker_listeners[].resources[].names": "Resource names, as for `listeners`.",
    "worker_listeners[].tls": "Serve HTTPS on this port.",
    "worker_listeners[].x_forwarded": "Behind a reverse proxy: trust `X-Forwarded-For`.",
    "worker_listeners[].tag": "Name of the listener in the access log and metrics.",
    "instance_map": "Where each process's `replication` listener is, by instance name (`main` included): "
                    "`{host, port}`, with `tls` optional.",
    "instance_map.<name>.host": "Host of the instance's replication listener.",
    "instance_map.<name>.port": "Port of the instance's replication listener.",
    "instance_map.<name>.tls": "Whether that listener speaks HTTPS.",
    "worker_replication_host": "Older form (Synapse before 1.84), in a worker's file: the main process's "
                               "replication host; becomes `instance_map.main`.",
    "worker_replication_http_port": "Older form: the main process's replication port (with "
                                    "`worker_replication_host`).",
    "worker_replication_secret": "A shared secret for requests between processes (writes forwarded to a "
                                 "stream writer's `replication` listener): sent as a Bearer token, and "
                                 "requests without it are refused. Unset: the listener trusts its network.",
    "redis": "The Redis server processes tell each other of their writes through (pub/sub). Required for "
             "workers; the main process of a deployment with workers enables it too.",
    "redis.enabled": "Use Redis.",
    "redis.host": "Redis host.",
    "redis.port": "Redis port.",
    "redis.password": "Redis password.",
    "redis.dbid": "Redis database number (pub/sub channels ignore it: see `channel_prefix`).",
    "redis.use_tls": "Connect to Redis with TLS.",
    "redis.channel_prefix": "Ours: prefix of the pub/sub channel names (default `gateway/<server_name>`). "
                            "Deployments sharing one Redis need different prefixes.",
    "stream_writers": "Which instance writes each stream (`events`, `typing`, `to_device`, `account_data`, "
                      "`receipts`, `presence`, `push_rules`, `device_lists`): `main` by default. `events` may "
                      "name several event persisters (rooms are shared out by a hash of the room ID), the "
                      "others one instance each; every writer but `main` needs an `instance_map` entry. "
                      "Other processes forward these writes to the writer's `replication` listener.",
    "federation_sender_instances": "The workers that send outbound federation (default: the main process, if "
                                   "`send_federation`). With several, each destination has one sender: the "
                                   "SHA-256 of its server name, read as a little-endian integer, modulo the "
                                   "list's length, indexes the list.",
    "run_background_tasks_on": "The instance that runs background tasks (partial-state resyncs, profile "
                               "updates in rooms, the mail queue).",
    "start_pushers": "The main process sends pushes (when `pusher_instances` is empty).",
    "pusher_instances": "Instances that send pushes (HTTP and email pushers), each for its shard of the users "
                        "(by a hash of the user ID); main pushes only if named here.",
    "enable_media_repo": "This process serves the media repository: false in the shared file when a media "
                         "worker does (main then answers 404 `M_UNRECOGNIZED` on media paths), true in that "
                         "worker's own file (implied for `synapse.app.media_repository`).",
    "media_instance_running_background_jobs": "The media worker that runs media background jobs (expired upload "
                                              "reservations); unset: main, if it has `enable_media_repo`.",
    "update_user_directory_from_worker": "The worker that updates the user directory (default: main).",
    "notify_appservices_from_worker": "The worker that sends application service transactions "
                                      "(default: main).",
    "dns_nameservers": "Ours: the DNS servers to ask (`IP` or `IP:port`), instead of the system's.",
    # --- federation -----------------------------------------------------------------------
    "ip_range_blacklist": "Addresses outbound requests must never reach (pushers, federation unless "
                          "`federation_ip_range_blacklist` is set). The default holds the private, loopback, "
                          "link-local and other reserved ranges of IPv4 and IPv6.",
    "ip_range_whitelist": "Exceptions to the blacklists.",
    "federation_ip_range_blacklist": "Addresses other servers must never resolve to (default: "
                                     "`ip_range_blacklist`).",
    "federation_domain_whitelist": "When set, federate with these server names only (in and out).",
    "federation_verify_certificates": "Check other servers' TLS certificates. Turn off only in tests.",
    "federation_custom_ca_list": "Extra CA certificates (PEM files) trusted for federation.",
    "federation_certificate_verification_whitelist": "Server names (globs) whose certificates are not checked.",
    "trusted_key_servers": "Notaries asked for other servers' keys before asking the servers themselves. "
                           "Empty (the default): always ask each server.",
    "trusted_key_servers[].server_name": "The notary's server name.",
    "trusted_key_servers[].verify_keys": "The notary's own keys, by key ID; when set, its answers must be "
                                         "signed by one of them.",
    "trusted_key_servers[].verify_keys.ed25519:<version>": "A public key, unpadded base64.",
    "trusted_key_servers[].accept_keys_insecurely": "Accepted, ignored. A notary without `verify_keys` is "
                                                    "trusted through its TLS certificate, and not asked at all "
                                                    "when `federation_verify_certificates` is off.",
    "federation": "Sending to other servers.",
    "federation.destination_min_retry_interval": "First wait before retrying a server that did not answer.",
    "federation.destination_retry_multiplier": "Each further wait is this many times longer.",
    "federation.destination_max_retry_interval": "Longest wait between retries.",
    # --- rate limits ------------------------------------------------------------------------
    "rc_message": "Events clients send. " + _RC,
    "rc_message.per_second": "Steady rate.",
    "rc_message.burst_count": "Burst size.",
    "rc_admin_redaction": "Redactions sent by server admins (default: as `rc_message`).",
    "rc_registration": "Registrations per client IP address.",
    "rc_registration_token_validity": "Registration token validity checks per client IP address.",
    "rc_oauth_registration": "OAuth 2.0 client registrations, device authorisations and authorisation "
                             "requests per client IP address (each a separate budget; clients register anew "
                             "for every sign-in).",
    "rc_login": "Logins.",
    "rc_login.address": "Login attempts per client IP address.",
    "rc_login.account": "Login attempts per account.",
    "rc_login.failed_attempts": "Failed login attempts per account.",
    "rc_joins": "Joins, per user.",
    "rc_joins.local": "Joins to rooms this server is in.",
    "rc_joins.remote": "Joins that go through another server.",
    "rc_joins_per_room": "Joins per room, all users together.",
    "rc_invites": "Invites.",
    "rc_invites.per_room": "Invites sent into one room.",
    "rc_invites.per_user": "Invites one user receives.",
    "rc_invites.per_issuer": "Invites one user sends.",
    "rc_room_creation": "Rooms one user creates (room upgrades count).",
    "rc_presence": "Presence updates.",
    "rc_presence.per_user": "Presence updates per user.",
    "rc_media_create": "`/media/create` calls per user.",
    "rc_reports": "Reports of events, rooms and users per user.",
    "rc_3pid_validation": "`requestToken` calls, per e-mail address and per client address. " + _RC,
    "rc_third_party_invite": "Invites by e-mail address (through an identity server) one user sends.",
    "rc_key_requests": _NOT_APPLIED,
    "rc_delayed_event_mgmt": _NOT_APPLIED,
    "rc_federation": _NOT_APPLIED,
    # --- single sign-on ------------------------------------------------------------------------
    "oidc_providers": "OpenID Connect identity providers (docs/sso.md#openid-connect).",
    "oidc_providers[].idp_id": "Short ID, unique among providers; clients see `oidc-<idp_id>`. Keep it once "
                               "users logged in: their link to the provider is stored under it.",
    "oidc_providers[].idp_name": "Name on the login buttons and pages.",
    "oidc_providers[].idp_icon": "Icon for clients (`mxc://` URI).",
    "oidc_providers[].idp_brand": "A brand hint for clients (`google`, `github`, `gitlab`, `apple`...).",
    "oidc_providers[].discover": "Read the endpoints from `<issuer>/.well-known/openid-configuration`. "
                                 "When false, give the endpoints below.",
    "oidc_providers[].issuer": "The provider's issuer URL, exactly as its ID tokens name it.",
    "oidc_providers[].client_id": "Our client ID at the provider.",
    "oidc_providers[].client_secret": "Our client secret at the provider.",
    "oidc_providers[].client_secret_path": "A file holding `client_secret`.",
    "oidc_providers[].client_secret_jwt_key": "Sign a fresh client secret JWT for each token request "
                                              "instead of a fixed secret (Sign in with Apple).",
    "oidc_providers[].client_secret_jwt_key.key": "The private key (PEM).",
    "oidc_providers[].client_secret_jwt_key.key_file": "A file holding `key`.",
    "oidc_providers[].client_secret_jwt_key.jwt_header": "The JWT header, at least `alg` (e.g. `ES256`) and "
                                                         "usually `kid`.",
    "oidc_providers[].client_secret_jwt_key.jwt_payload": "Claims added to the JWT (e.g. `iss`: your team ID).",
    "oidc_providers[].client_auth_method": "How we authenticate at the token endpoint.",
    "oidc_providers[].pkce_method": "PKCE: `auto` when the provider advertises S256, `always`, or `never`.",
    "oidc_providers[].scopes": "Scopes asked for. Without `openid` the claims come from the userinfo endpoint "
                               "(plain OAuth 2.0 providers such as GitHub).",
    "oidc_providers[].authorization_endpoint": "Overrides (or, without discovery, gives) the endpoint.",
    "oidc_providers[].token_endpoint": "Overrides (or, without discovery, gives) the endpoint.",
    "oidc_providers[].userinfo_endpoint": "Overrides (or, without discovery, gives) the endpoint.",
    "oidc_providers[].jwks_uri": "Overrides (or, without discovery, gives) where the ID token keys are.",
    "oidc_providers[].skip_verification": "Skip the checks of the discovery document and of the ID token's "
                                          "issuer. For tests only.",
    "oidc_providers[].user_profile_method": "`auto`: the claims of the ID token (the userinfo endpoint only "
                                            "without the `openid` scope); `userinfo_endpoint`: always ask the "
                                            "userinfo endpoint.",
    "oidc_providers[].allow_existing_users": "A login whose mapped user ID already exists logs into that "
                                             "account (and links it) instead of picking another name.",
    "oidc_providers[].enable_registration": "Create accounts for new users of this provider.",
    "oidc_providers[].attribute_requirements": "Claims a user must have to log in.",
    "oidc_providers[].attribute_requirements[].attribute": "Claim name.",
    "oidc_providers[].attribute_requirements[].value": "The claim must equal this (or, for a list claim, "
                                                       "contain it).",
    "oidc_providers[].attribute_requirements[].one_of": "The claim must be one of these.",
    "oidc_providers[].user_mapping_provider": "How claims become a Matrix user (docs/sso.md#mapping-providers).",
    "oidc_providers[].user_mapping_provider.module": "The mapping provider class (default: the Jinja "
                                                     "templates mapper).",
    "oidc_providers[].user_mapping_provider.config": "The mapping provider's options: for the default one "
                                                     "`subject_template`, `localpart_template`, "
                                                     "`display_name_template`, `email_template`, "
                                                     "`picture_template`, `extra_attributes`, `confirm_localpart`.",
    "oidc_providers[].backchannel_logout_enabled": "Accept OIDC back-channel logout tokens from the provider.",
    "oidc_providers[].backchannel_logout_ignore_sub": "Match logout tokens on `sid` only, ignoring `sub`.",
    "oidc_providers[].additional_authorization_parameters": "Extra query parameters for the authorization "
                                                            "request.",
    "oidc_providers[].additional_authorization_parameters.<parameter>": "A parameter's value.",
    "oidc_providers[].passthrough_authorization_parameters": "Query parameters of the client's "
                                                             "`/login/sso/redirect` passed on to the authorization "
                                                             "request (e.g. `login_hint`); they win over "
                                                             "`additional_authorization_parameters`.",
    "oidc_config": "Deprecated: one provider, with the keys of an `oidc_providers` entry plus `enabled`; it gets "
                   "`idp_id: oidc`. Move it into `oidc_providers`.",
    "saml2_config": "SAML 2.0 login through pysaml2 (docs/sso.md#saml).",
    "saml2_config.enabled": "Turn SAML on (it also needs `sp_config` or `config_path`).",
    "saml2_config.sp_config": "pysaml2 service provider configuration, merged over ours (entity ID, "
                              "assertion consumer service, required attributes).",
    "saml2_config.config_path": "A Python file defining `CONFIG`, merged over `sp_config`.",
    "saml2_config.saml_session_lifetime": "How long a login may take at the IdP.",
    "saml2_config.user_mapping_provider": "How SAML attributes become a Matrix user.",
    "saml2_config.user_mapping_provider.module": "The mapping provider class (default: ours, with "
                                                 "Synapse's behaviour).",
    "saml2_config.user_mapping_provider.config": "Options of the default mapper: `mxid_source_attribute` "
                                                 "(default `uid`) and `mxid_mapping` (`hexencode` or "
                                                 "`dotreplace`).",
    "saml2_config.mxid_source_attribute": "Deprecated place of the mapper option.",
    "saml2_config.mxid_mapping": "Deprecated place of the mapper option.",
    "saml2_config.grandfathered_mxid_source_attribute": "Attribute naming an existing account to link to.",
    "saml2_config.attribute_requirements": "Attributes a user must have to log in.",
    "saml2_config.attribute_requirements[].attribute": "Attribute name.",
    "saml2_config.attribute_requirements[].value": "The attribute must hold this value.",
    "saml2_config.attribute_requirements[].one_of": "The attribute must hold one of these.",
    "saml2_config.idp_entityid": "With several IdPs in the metadata, the one to use.",
    "saml2_config.idp_name": "Name on the login buttons.",
    "saml2_config.idp_icon": "Icon for clients (`mxc://` URI).",
    "saml2_config.idp_brand": "A brand hint for clients.",
    "saml2_config.enable_registration": "Create accounts for new users.",
    "cas_config": "CAS login (docs/sso.md#cas).",
    "cas_config.enabled": "Turn CAS on.",
    "cas_config.server_url": "The CAS server's base URL (its `/login` and `/proxyValidate` are under it).",
    "cas_config.protocol_version": "`2` or `3` (version 3 validates at `/p3/proxyValidate`).",
    "cas_config.required_attributes": "Attribute name to required value (null: only present).",
    "cas_config.displayname_attribute": "Attribute holding the display name.",
    "cas_config.idp_name": "Name on the login buttons.",
    "cas_config.idp_icon": "Icon for clients (`mxc://` URI).",
    "cas_config.idp_brand": "A brand hint for clients.",
    "cas_config.enable_registration": "Create accounts for new users.",
    "jwt_config": "`org.matrix.login.jwt` logins with a signed JSON Web Token (docs/sso.md#jwt).",
    "jwt_config.enabled": "Turn JWT login on.",
    "jwt_config.secret": "The HMAC secret, or the public key (PEM) for RSA/EC/EdDSA algorithms.",
    "jwt_config.secret_path": "A file holding `secret`.",
    "jwt_config.algorithm": "The one algorithm accepted (never `none`).",
    "jwt_config.subject_claim": "The claim holding the localpart.",
    "jwt_config.display_name_claim": "A claim holding the display name, set at first login.",
    "jwt_config.issuer": "When set, `iss` must equal it.",
    "jwt_config.audiences": "When set, `aud` must contain one of them; when unset, tokens with `aud` are "
                            "refused.",
    "jwt_config.login_url": "With `oauth` on: the token service's sign-in page, a button on our sign-in "
                            "page; it sends the browser back to the `redirect_uri` query parameter it "
                            "receives, adding `token=<the JWT>` (docs/oauth.md).",
    "jwt_config.idp_name": "The label of that button.",
    "sso": "Shared by every SSO login.",
    "sso.client_whitelist": "URL prefixes of clients trusted to receive login tokens without the "
                            "confirmation page.",
    "sso.update_profile_information": "Update the display name and avatar from the IdP at every login.",
    # --- consent, notices, directories, modules ---------------------------------------------
    "user_consent": "A policy new users accept (docs: the README's Configuration section).",
    "user_consent.template_dir": "Directory of policy documents, `<lang>/<version>.html`.",
    "user_consent.version": "The current version (names the file `en/<version>.html`, which must exist).",
    "user_consent.require_at_registration": "New users accept the policy before their account exists "
                                            "(`m.login.terms` in `/register`, a page after SSO).",
    "user_consent.policy_name": "The policy's name on pages.",
    "user_consent.server_notice_content": "Not supported yet (warned).",
    "user_consent.send_server_notice_to_guests": "Not supported yet (warned).",
    "user_consent.block_events_error": "Not supported yet (warned).",
    "server_notices": "Notices from the server to users, in a room of their own (`gateway send-notice`, the "
                      "admin API). Off unless `system_mxid_localpart` is set.",
    "server_notices.system_mxid_localpart": "Localpart of the user the notices come from.",
    "server_notices.system_mxid_display_name": "That user's display name.",
    "server_notices.system_mxid_avatar_url": "That user's avatar (`mxc://`).",
    "server_notices.room_name": "Name of the notices room.",
    "server_notices.room_avatar_url": "Avatar of the notices room (`mxc://`).",
    "server_notices.room_topic": "Topic of the notices room.",
    "server_notices.auto_join": "Join users to the notices room instead of inviting them.",
    "user_directory": "User search (`/user_directory/search`).",
    "user_directory.enabled": "Serve user search.",
    "user_directory.search_all_users": "Search every local user, not only those sharing a room with the "
                                       "searcher or in public rooms.",
    "user_directory.prefer_local_users": "Accepted; results are not reordered.",
    "room_list_publication_rules": "Who may publish which room in the room directory; the first matching rule "
                                   "decides, no match denies. Default: everyone may (Synapse denies).",
    "room_list_publication_rules[].user_id": "Glob on the user's ID.",
    "room_list_publication_rules[].alias": "Glob on the room's aliases.",
    "room_list_publication_rules[].room_id": "Glob on the room ID.",
    "room_list_publication_rules[].action": "What a match means.",
    "alias_creation_rules": "Who may create which alias; the first matching rule decides, no match denies. "
                            "Default: everyone may.",
    "alias_creation_rules[].user_id": "Glob on the user's ID.",
    "alias_creation_rules[].alias": "Glob on the alias.",
    "alias_creation_rules[].room_id": "Glob on the room ID.",
    "alias_creation_rules[].action": "What a match means.",
    "allow_public_rooms_without_auth": "Serve the room directory to clients without an access token.",
    "allow_public_rooms_over_federation": "Serve the room directory to other servers.",
    "modules": "Python modules with Synapse's module API (docs/modules.md).",
    "modules[].module": "`package.module.Class`, importable by the server.",
    "modules[].config": "The module's own options.",
    # --- profiles ---------------------------------------------------------------------------
    "require_auth_for_profile_requests": "Profile reads through the client API need an access token.",
    "limit_profile_requests_to_users_who_share_rooms": "A user may read only the profiles of users they share a "
                                                       "room with (reads then need a token).",
    "allow_profile_lookup_over_federation": "Other servers may query our users' profiles.",
    "app_service_config_files": "Registration files of application services (bridges, bots), Synapse's "
                                "format; relative paths are from this file. docs/appservices.md.",
    "track_appservice_user_ips": "Record the address and user agent of requests made with an `as_token` "
                                 "(devices' last seen, whois), as for other clients.",
    "use_appservice_legacy_authorization": "Also send the `hs_token` as an `access_token` query parameter, for "
                                           "services written before spec v1.4 (it ends up in their logs).",
    "include_profile_data_on_invite": "Invites carry the invitee's display name and avatar.",
    "enable_set_displayname": "When false, users cannot change a display name once set (admins still can).",
    "enable_set_avatar_url": "When false, users cannot change an avatar once set (admins still can).",
    "allow_per_room_profiles": "Member events a user sends may carry a display name or avatar other than their "
                               "profile's; when false, the profile's are used.",
    "max_avatar_size": "Largest file a user may pick as avatar (profile or member event); the file must be in "
                       "our media repository. Unset: no limit.",
    "allowed_avatar_mimetypes": "Media types a user's avatar may have, e.g. `[\"image/png\", \"image/jpeg\"]`; "
                                "the file must be in our media repository. Unset or empty: any.",
    # --- media ------------------------------------------------------------------------------
    "media_store_path": "Directory of uploaded files, thumbnails and cached remote media (docs/media.md).",
    "max_upload_size": "Largest upload.",
    "max_image_pixels": "Largest image (in pixels) a thumbnail is made of.",
    "dynamic_thumbnails": "Make thumbnails of any requested size, not only `thumbnail_sizes`.",
    "thumbnail_sizes": "Thumbnails made for each image.",
    "thumbnail_sizes[].width": "Width in pixels.",
    "thumbnail_sizes[].height": "Height in pixels.",
    "thumbnail_sizes[].method": "`crop` to the exact size or `scale` within it.",
    "enable_authenticated_media": "Downloads need an access token (the /_matrix/client/v1/media paths); the old "
                                  "/_matrix/media/v3 downloads answer 404.",
    "unused_expiration_time": "How long a `/media/create` ID waits for its upload.",
    "max_pending_media_uploads": "How many `/media/create` IDs a user may hold unused.",
    "url_preview_enabled": "Serve URL previews.",
    "url_preview_ip_range_blacklist": "Addresses the preview spider must never fetch (required with "
                                      "previews).",
    "url_preview_ip_range_whitelist": "Exceptions to it.",
    "max_spider_size": "Largest page the spider reads.",
    "url_preview_accept_language": "The spider's `Accept-Language`.",
    # --- lifetimes of legacy logins (docs/accounts.md) -----------------------------------------
    "session_lifetime": "A login ends this long after it began, however often it is refreshed (then 401 "
                        "`M_UNKNOWN_TOKEN` with `soft_logout: true`). Unset: never. Applies to new logins; guests "
                        "without refresh tokens are exempt.",
    "refreshable_access_token_lifetime": "Lifetime of access tokens of clients that asked for a refresh token "
                                         "(`refresh_token: true` at `/login` or `/register`).",
    "refresh_token_lifetime": "A refresh token unused this long stops working: inactive sessions end. Unset: "
                              "never.",
    "nonrefreshable_access_token_lifetime": "Lifetime of access tokens of clients without refresh tokens. "
                                            "Unset: they do not expire.",
    # --- TURN (docs/accounts.md) ---------------------------------------------------------------
    "turn_uris": "The TURN servers clients get from `/voip/turnServer` (`turn:` or `turns:` URIs). Empty: "
                 "`/voip/turnServer` answers `{}`.",
    "turn_shared_secret": "coturn's `static-auth-secret` (`use-auth-secret`): each user gets a username "
                          "`<expiry>:<user ID>` and its base64 HMAC-SHA1 as password, valid `turn_user_lifetime`.",
    "turn_shared_secret_path": "A file holding `turn_shared_secret`.",
    "turn_username": "A fixed TURN username for everyone (when there is no `turn_shared_secret`).",
    "turn_password": "Its password.",
    "turn_user_lifetime": "How long handed-out credentials last (the `ttl`).",
    "turn_allow_guests": "Guests get TURN credentials too (otherwise 403 `M_GUEST_ACCESS_FORBIDDEN`).",
    # --- e-mail and 3PIDs (docs/accounts.md) ----------------------------------------------------
    "email": "Gateway's own mail (address validation, password resets, missed-message notifications) through "
             "an SMTP server. Absent: no mail, and e-mail addresses cannot be added or used.",
    "email.smtp_host": "The SMTP server.",
    "email.smtp_port": "Its port (default 465 with `force_tls`, else 25).",
    "email.smtp_user": "SMTP AUTH user (with `smtp_pass`); unset: no AUTH.",
    "email.smtp_pass": "SMTP AUTH password.",
    "email.force_tls": "TLS from the first byte (SMTPS); `require_transport_security` is then moot.",
    "email.require_transport_security": "Refuse to send unless the server offers STARTTLS.",
    "email.enable_tls": "Use STARTTLS when offered, checking the certificate against `smtp_host`; false: never.",
    "email.notif_from": "The From address (required); `%(app)s` becomes `app_name`.",
    "email.app_name": "The `%(app)s` of `notif_from` and the subjects.",
    "email.enable_notifs": "Mail users about messages they missed (an `email` pusher per address).",
    "email.notif_for_new_users": "New users with an address get an e-mail pusher (with `enable_notifs`).",
    "email.client_base_url": "Links in notification mails point here (`riot_base_url` is read too).",
    "email.riot_base_url": "The old name of `client_base_url`.",
    "email.validation_token_lifetime": "How long a validation link works.",
    "email.invite_client_location": "Passed to identity servers with third-party invites "
                                    "(`org.matrix.web_client_location`).",
    "email.subjects": "Mail subjects, with `%(app)s`, `%(person)s`, `%(room)s`, `%(server_name)s`.",
    "email.subjects.message_from_person_in_room": "Subject of one message, a room with a name.",
    "email.subjects.message_from_person": "Subject of one message, a room without a name.",
    "email.subjects.messages_from_person": "Subject of messages from someone, a room without a name.",
    "email.subjects.messages_in_room": "Subject of messages in a room with a name.",
    "email.subjects.messages_in_room_and_others": "Subject of messages in several rooms.",
    "email.subjects.messages_from_person_and_others": "Subject of messages from several people.",
    "email.subjects.invite_from_person_to_room": "Subject of an invite to a room with a name.",
    "email.subjects.invite_from_person": "Subject of an invite to a room without a name.",
    "email.subjects.password_reset": "Subject of the password reset mail.",
    "email.subjects.email_validation": "Subject of the address validation mails.",
    "email.template_dir": "Accepted; use `templates.custom_template_directory`.",
    "email.notif_template_html": "Accepted; use `templates.custom_template_directory` (`notif_mail.html`).",
    "email.notif_template_text": "Accepted; use `templates.custom_template_directory` (`notif_mail.txt`).",
    "email.expiry_template_html": "Accepted, unused.",
    "email.expiry_template_text": "Accepted, unused.",
    "registrations_require_3pid": "Registration must validate these (only `email`; `msisdn` needs "
                                  "`disable_msisdn_registration`).",
    "allowed_local_3pids": "When set, only matching addresses may be registered or added.",
    "allowed_local_3pids[].medium": "`email` or `msisdn`.",
    "allowed_local_3pids[].pattern": "A regular expression the address must match (searched).",
    "disable_msisdn_registration": "Drop `msisdn` from `registrations_require_3pid` (phone numbers are not "
                                   "supported anyway).",
    "request_token_inhibit_3pid_errors": "`requestToken` never tells whether an address is in use: it answers a "
                                         "session ID and sends nothing.",
    "enable_3pid_changes": "Users may add and remove addresses (the `m.3pid_changes` capability).",
    "next_link_domain_whitelist": "Hosts a `next_link` may point at (others refused at `requestToken`); the "
                                  "validation page sends the browser there. Unset: any host, but only our own "
                                  "and `email.client_base_url`'s are redirected to; others are shown as a link.",
    "enable_3pid_lookup": "Third-party invites may look addresses up at identity servers.",
    # --- the OAuth 2.0 API (docs/oauth.md) -------------------------------------------------
    "oauth": "Gateway as the spec's OAuth 2.0 authorisation server (docs/oauth.md); upstream logins are the "
             "`oidc_providers`, `saml2_config` and `cas_config` sections.",
    "oauth.enabled": "Serve the OAuth 2.0 API (`auth_metadata`, registration, our sign-in pages). Off: "
                     "`auth_metadata` answers 404 `M_UNRECOGNIZED`.",
    "oauth.access_token_lifetime": "How long an access token lives; clients refresh it with their refresh token.",
    "oauth.enable_password_login": "Offer the password form on the sign-in page.",
    "oauth.enable_registration": "Let people create an account on our pages (`prompt=create`, "
                                 "`action=register`); honours `registration_requires_token` and "
                                 "`user_consent.require_at_registration`.",
    "oauth.allow_loopback_http_web_clients": "Development only: accept `http://` on loopback hosts for a web "
                                             "client's `client_uri` and redirect URIs (the spec wants `https`).",
    "oauth.device_code_lifetime": "How long a device code (RFC 8628) stays valid (at least 1m).",
    "oauth.device_code_poll_interval": "How often a device may poll the token endpoint (whole seconds).",
    "oauth.browser_session_lifetime": "How long a browser stays signed in on our pages.",
    "oauth.static_clients": "Clients with a fixed `client_id`; their metadata follows the dynamic "
                            "registration rules (loopback `http` allowed), checked at startup.",
    "oauth.static_clients[].client_id": "The client's ID.",
    "oauth.static_clients[].client_uri": "The client's web page (`https`); the other URIs must be on its host.",
    "oauth.static_clients[].client_name": "Name on the consent page (`client_name#<lang>` variants too).",
    "oauth.static_clients[].application_type": "`web` or `native` (which redirect URIs are allowed).",
    "oauth.static_clients[].redirect_uris": "Where the browser returns with the code.",
    "oauth.static_clients[].grant_types": "Of `authorization_code`, `refresh_token`, "
                                          "`urn:ietf:params:oauth:grant-type:device_code`.",
    "oauth.static_clients[].response_types": "`code` for the authorisation code grant.",
    "oauth.static_clients[].logo_uri": "Logo on the consent page.",
    "oauth.static_clients[].tos_uri": "Terms of service, linked on the consent page.",
    "oauth.static_clients[].policy_uri": "Privacy policy, linked on the consent page.",
    "oauth.static_clients[].token_endpoint_auth_method": "Only `none`: clients are public.",
}
