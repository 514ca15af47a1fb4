"""homeserver.yaml parsing: defaults, Synapse key names, errors that name the key."""

from __future__ import annotations

import pytest
import yaml

from gateway.config import ConfigError, load_config, parse_config
from gateway.config.generate import render_config

MINIMAL = {"server_name": "example.com"}


def test_defaults():
    c = parse_config(MINIMAL, config_path="/etc/gateway/homeserver.yaml")
    assert c.public_baseurl == "https://example.com/"
    assert c.default_room_version == "12"
    assert c.database.engine == "sqlite"
    assert c.database.sqlite_path == "/etc/gateway/homeserver.db"
    assert c.signing_key_path == "/etc/gateway/example.com.signing.key"
    assert c.key_refresh_interval_ms == 86_400_000
    assert c.enable_registration is False
    assert c.rate_limits["rc_message"].per_second == 0.2
    assert c.rate_limits["rc_login.failed_attempts"].burst_count == 3
    assert c.federation.destination_max_retry_interval_ms == 86_400_000
    assert c.warnings == ()


def test_synapse_style_sections():
    c = parse_config(
        {
            **MINIMAL,
            "public_baseurl": "https://matrix.example.com",
            "listeners": [
                {"port": 8448, "type": "http", "tls": True, "resources": [{"names": ["federation"]}]},
                {"port": 8008, "bind_addresses": ["127.0.0.1"], "x_forwarded": True,
                 "resources": [{"names": ["client"], "compress": False}]},
                {"port": 9000, "type": "metrics", "bind_addresses": ["127.0.0.1"]},
            ],
            "tls_certificate_path": "cert.pem",
            "tls_private_key_path": "key.pem",
            "database": {"name": "psycopg2", "args": {"user": "u", "password": "p", "database": "d",
                                                      "host": "h", "port": 5433, "cp_min": 2, "cp_max": 4}},
            "key_refresh_interval": "2d",
            "old_signing_keys": {"ed25519:old": {"key": "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ",
                                                 "expired_ts": 1000}},
            "rc_message": {"per_second": 100, "burst_count": 200},
            "bcrypt_rounds": 10,
            "rc_login": {"address": {"per_second": 5, "burst_count": 10}},
            "federation_ip_range_blacklist": [],
            "ip_range_whitelist": ["127.0.0.0/8", "::1/128"],
            "federation": {"destination_max_retry_interval": "1h"},
            "report_stats": False,
        }
    )
    assert c.public_baseurl == "https://matrix.example.com/"
    fed, client, metrics = c.listeners
    assert fed.tls and {"federation", "keys", "media", "openid"} <= fed.resources
    assert client.bind_addresses == ("127.0.0.1",) and "client" in client.resources and client.x_forwarded
    assert metrics.resources == {"metrics"}
    assert c.database.engine == "postgres" and c.database.args["port"] == 5433
    assert c.key_refresh_interval_ms == 2 * 86_400_000
    assert c.old_signing_keys["ed25519:old"]["expired_ts"] == 1000
    assert c.rate_limits["rc_message"].per_second == 100
    assert c.bcrypt_rounds == 10
    assert c.rate_limits["rc_login.address"].burst_count == 10
    assert c.rate_limits["rc_login.account"].per_second == 0.03
    assert c.federation.federation_ip_range_blacklist == ()
    assert len(c.federation.ip_range_blacklist) > 10  # Synapse's default list
    assert c.federation.destination_max_retry_interval_ms == 3_600_000
    assert c.warnings == ()


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ({"server_name": None}, "server_name", "required"),
        ({"bcrypt_rounds": 2}, "bcrypt_rounds", "between 4 and 31"),
        ({"server_name": 5}, "server_name", "expected a string"),
        ({"server_name": "bad name!"}, "server_name", "not a valid server name"),
        ({"listeners": [{"port": "eighty"}]}, "listeners[0].port", "expected an integer"),
        ({"listeners": [{"port": 70000}]}, "listeners[0].port", "between"),
        ({"listeners": [{"port": 1, "resources": [{"names": ["clients"]}]}]},
         "listeners[0].resources[0].names", "unknown resource 'clients'"),
        ({"listeners": [{"port": 1, "bind_addresses": ["localhost"]}]},
         "listeners[0].bind_addresses[0]", "expected an IP address"),
        ({"listeners": [{"port": 1, "tls": True}]}, "tls_certificate_path", "required"),
        ({"database": {"name": "mysql"}}, "database.name", "expected one of"),
        ({"database": {"name": "psycopg2", "args": {"port": "x"}}}, "database.args.port", "port"),
        ({"default_room_version": "99"}, "default_room_version", "expected one of"),
        ({"key_refresh_interval": "soon"}, "key_refresh_interval", "duration"),
        ({"enable_registration": "yes"}, "enable_registration", "true or false"),
        ({"enable_registration": True}, "enable_registration", "dangerous"),
        ({"rc_message": {"per_second": "fast"}}, "rc_message.per_second", "expected a number"),
        ({"rc_login": {"account": {"burst_count": -1}}}, "rc_login.account.burst_count", ">= 0"),
        ({"old_signing_keys": {"ed25519:x": {"key": "short", "expired_ts": 1}}},
         "old_signing_keys.ed25519:x.key", "32-byte"),
        ({"ip_range_whitelist": ["not-a-range"]}, "ip_range_whitelist[0]", "IP range"),
        ({"public_baseurl": "matrix.example.com"}, "public_baseurl", "http"),
        ({"listeners": "8008"}, "listeners", "expected a list"),
        ({"require_auth_for_profile_requests": "yes"}, "require_auth_for_profile_requests", "true or false"),
        ({"limit_profile_requests_to_users_who_share_rooms": 1},
         "limit_profile_requests_to_users_who_share_rooms", "true or false"),
        ({"allow_profile_lookup_over_federation": "no"}, "allow_profile_lookup_over_federation", "true or false"),
        ({"enable_registration_captcha": True}, "recaptcha_public_key", "required"),
        ({"enable_registration_captcha": True, "recaptcha_public_key": "p"}, "recaptcha_private_key", "required"),
        ({"recaptcha_siteverify_api": "verify.example.com"}, "recaptcha_siteverify_api", "http"),
        ({"enable_ephemeral_messages": "yes"}, "enable_ephemeral_messages", "true or false"),
    ],
)
def test_bad_values_name_the_key(override, key, fragment):
    with pytest.raises(ConfigError) as e:
        parse_config({**MINIMAL, **override})
    assert e.value.path == key
    assert fragment in str(e.value)


def test_unknown_keys_warn():
    c = parse_config({**MINIMAL, "no_such_option": 1, "rc_federation": {"typo": 2}})
    assert any("no_such_option" in w for w in c.warnings)
    assert any("rc_federation.typo" in w for w in c.warnings)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(str(notmap))


def test_profile_keys():
    """Synapse's profile keys and defaults: reads need no token, other servers may ask."""
    defaults = parse_config(MINIMAL).profiles
    assert not defaults.require_auth_for_profile_requests
    assert not defaults.limit_profile_requests_to_users_who_share_rooms
    assert defaults.allow_profile_lookup_over_federation and defaults.include_profile_data_on_invite
    assert defaults.enable_set_displayname and defaults.enable_set_avatar_url
    c = parse_config({**MINIMAL, "require_auth_for_profile_requests": True,
                      "limit_profile_requests_to_users_who_share_rooms": True,
                      "allow_profile_lookup_over_federation": False, "include_profile_data_on_invite": False,
                      "enable_set_displayname": False, "enable_set_avatar_url": False})
    assert c.warnings == ()
    assert c.profiles.require_auth_for_profile_requests and c.profiles.limit_profile_requests_to_users_who_share_rooms
    assert not (c.profiles.allow_profile_lookup_over_federation or c.profiles.include_profile_data_on_invite
                or c.profiles.enable_set_displayname or c.profiles.enable_set_avatar_url)


def test_generated_config_lists_the_profile_keys(tmp_path):
    """The commented profile keys of the generated file, uncommented, are read as written."""
    text = render_config(server_name="example.org", data_dir=str(tmp_path), port=8123)
    lines = [line[2:] for line in text.splitlines()
             if line.startswith("# ") and "profile" in line and line.rstrip().endswith(("true", "false"))]
    assert len(lines) == 4
    c = parse_config({**yaml.safe_load(text), **yaml.safe_load("\n".join(lines))},
                     config_path=str(tmp_path / "homeserver.yaml"))
    assert c.warnings == () and c.profiles == parse_config(MINIMAL).profiles


def test_generated_config_parses_without_warnings(tmp_path):
    text = render_config(server_name="example.org", data_dir=str(tmp_path), port=8123)
    c = parse_config(yaml.safe_load(text), config_path=str(tmp_path / "homeserver.yaml"))
    assert c.server_name == "example.org"
    assert c.listeners[0].port == 8123
    assert c.warnings == ()
    assert c.registration_shared_secret and c.macaroon_secret_key and c.form_secret


def test_custom_template_directory(tmp_path):
    c = parse_config({**MINIMAL, "templates": {"custom_template_directory": str(tmp_path)}})
    assert c.custom_template_directory == str(tmp_path)
    with pytest.raises(ConfigError) as e:
        parse_config({**MINIMAL, "templates": {"custom_template_directory": str(tmp_path / "missing")}})
    assert e.value.path == "templates.custom_template_directory"
