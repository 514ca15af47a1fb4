"""The ``turn_*`` keys: errors name the key."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config


def parse(tmp_path, **keys):
    return parse_config({"server_name": "example.com", **keys}, config_path=str(tmp_path / "homeserver.yaml"))


def test_defaults_offer_no_turn_server(tmp_path):
    turn = parse(tmp_path).turn
    assert not turn.enabled and turn.user_lifetime_ms == 3_600_000 and turn.allow_guests is True


def test_shared_secret_from_a_file_and_warnings(tmp_path):
    (tmp_path / "turn_secret").write_text("s3cret\n")
    config = parse(tmp_path, turn_uris=["turns:turn.example.com:443?transport=tcp"],
                   turn_shared_secret_path="turn_secret", turn_user_lifetime="1d",
                   turn_username="u", turn_password="p")
    assert config.turn.shared_secret == "s3cret" and config.turn.enabled and config.turn.user_lifetime_ms == 86_400_000
    assert config.turn.username is None  # the secret wins, with a warning
    assert any("turn_username" in w for w in config.warnings)
    assert any("no TURN server" in w for w in parse(tmp_path, turn_uris=["turn:t.example.com"]).warnings)


@pytest.mark.parametrize("keys, path", [
    ({"turn_uris": ["stun:stun.example.com"]}, "turn_uris[0]"),
    ({"turn_uris": "turn:example.com"}, "turn_uris"),
    ({"turn_shared_secret": "a", "turn_shared_secret_path": "f"}, "turn_shared_secret_path"),
    ({"turn_shared_secret_path": "missing"}, "turn_shared_secret_path"),
    ({"turn_shared_secret": ""}, "turn_shared_secret"),
    ({"turn_username": "u"}, "turn_password"),
    ({"turn_password": "p"}, "turn_username"),
    ({"turn_user_lifetime": "soon"}, "turn_user_lifetime"),
    ({"turn_user_lifetime": 10}, "turn_user_lifetime"),
    ({"turn_allow_guests": "no"}, "turn_allow_guests"),
])
def test_bad_values_name_the_key(tmp_path, keys, path):
    with pytest.raises(ConfigError) as e:
        parse(tmp_path, **keys)
    assert e.value.path == path
