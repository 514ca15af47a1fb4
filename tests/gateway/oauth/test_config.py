"""The ``oauth`` config section: off by default, typed, errors naming the key."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

BASE = {"server_name": "hs.test"}


def test_off_by_default_with_the_documented_defaults():
    config = parse_config(BASE).oauth
    assert not config.enabled
    assert config.access_token_lifetime_ms == 300_000 and config.enable_password_login
    assert not config.enable_registration and not config.allow_loopback_http_web_clients
    assert config.device_code_poll_interval_ms == 5000 and config.static_clients == ()


def test_values_and_static_clients():
    config = parse_config({**BASE, "oauth": {
        "enabled": True, "access_token_lifetime": "1m", "enable_registration": True,
        "device_code_poll_interval": "2s",
        "static_clients": [{"client_id": "element-x", "client_name": "Element X", "application_type": "native",
                            "client_uri": "https://element.io/", "redirect_uris": ["io.element:/callback"],
                            "grant_types": ["authorization_code", "refresh_token"]}]}})
    assert config.oauth.enabled and config.oauth.access_token_lifetime_ms == 60_000
    assert config.oauth.device_code_poll_interval_ms == 2000
    assert config.oauth.static_clients[0].metadata["redirect_uris"] == ["io.element:/callback"]


@pytest.mark.parametrize("section,key", [
    ({"enabled": "yes"}, "oauth.enabled"),
    ({"access_token_lifetime": "forever"}, "oauth.access_token_lifetime"),
    ({"access_token_lifetime": 500}, "oauth.access_token_lifetime"),
    ({"device_code_poll_interval": 1500}, "oauth.device_code_poll_interval"),
    ({"static_clients": [{"client_name": "no id"}]}, "oauth.static_clients[0].client_id"),
    ({"static_clients": [{"client_id": "x", "client_uri": "https://a.example/",
                          "redirect_uris": ["https://b.example/cb"]}]}, "oauth.static_clients[0]"),
    ({"static_clients": "not a list"}, "oauth.static_clients"),
])
def test_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "oauth": section})
    assert e.value.path == key, e.value


def test_unknown_keys_warn():
    config = parse_config({**BASE, "oauth": {"enabled": False, "acces_token_lifetime": "5m"}})
    assert "unknown config key 'oauth.acces_token_lifetime' (ignored)" in config.warnings
