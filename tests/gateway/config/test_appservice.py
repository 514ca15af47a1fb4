"""Registration files (``app_service_config_files``): Synapse's format, errors naming the
file and the key."""

from __future__ import annotations

import pytest
import yaml

from gateway.config import ConfigError, parse_config
from gateway.config.appservice import parse_registration

BASE = {"server_name": "hs.test", "listeners": []}

IRC = {
    "id": "IRC Bridge",
    "url": "http://127.0.0.1:1234/",
    "as_token": "30c05ae90a248a4188e620216fa72e349803310ec83e2a77b34fe90be6081f46",
    "hs_token": "312df522183efd404ec1cd22d2ffa4bbc76a8c1ccf541dd692eef281356bb74e",
    "sender_localpart": "_irc_bot",
    "namespaces": {
        "users": [{"exclusive": True, "regex": "@_irc_bridge_.*"}],
        "aliases": [{"exclusive": False, "regex": "#_irc_bridge_.*"}],
        "rooms": [],
    },
}


def write(tmp_path, name: str, data) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def load(tmp_path, *registrations, extra=None):
    files = [write(tmp_path, f"reg{i}.yaml", r) for i, r in enumerate(registrations)]
    return parse_config({**BASE, "app_service_config_files": files, **(extra or {})},
                        config_path=str(tmp_path / "homeserver.yaml"))


def test_the_spec_example_loads(tmp_path):
    config = load(tmp_path, IRC)
    [s] = config.appservice.services
    assert (s.id, s.url, s.sender) == ("IRC Bridge", "http://127.0.0.1:1234", "@_irc_bot:hs.test")
    assert s.rate_limited and not s.receive_ephemeral and s.protocols == ()
    # Namespaces: local users only; regexes match from the start (Synapse's re.match).
    assert s.is_user_in_namespace("@_irc_bridge_alice:hs.test")
    assert not s.is_user_in_namespace("@_irc_bridge_alice:other.test")
    assert not s.is_user_in_namespace("@alice:hs.test")
    assert s.is_exclusive_user("@_irc_bridge_bob:hs.test") and s.is_exclusive_user("@_irc_bot:hs.test")
    assert s.is_alias_in_namespace("#_irc_bridge_chan:hs.test") and not s.is_exclusive_alias("#_irc_bridge_chan:hs.test")
    assert s.is_interested_in_user("@_irc_bot:hs.test")


def test_registration_keys_bridges_write(tmp_path):
    reg = {**IRC, "rate_limited": False, "protocols": ["irc"], "de.sorunome.msc2409.push_ephemeral": True,
           "org.matrix.msc3202": True, "io.element.msc4190": True, "ip_range_whitelist": ["127.0.0.0/8"],
           "url": None}
    config = load(tmp_path, reg, extra={"experimental_features": {
        "msc2409_to_device_messages_enabled": True, "msc3202_transaction_extensions": True,
        "msc3202_device_masquerading": True}})
    [s] = config.appservice.services
    assert s.url is None and not s.rate_limited and s.protocols == ("irc",)
    assert s.receive_ephemeral and s.receive_ephemeral_unstable and not s.receive_ephemeral_stable
    assert s.msc3202 and s.msc4190
    assert s.may_connect_from("127.0.0.1") and not s.may_connect_from("10.1.2.3")
    assert config.appservice.to_device_messages and config.appservice.msc3202_transaction_extensions
    assert not [w for w in config.warnings if "experimental" in w or "reg0" in w]


@pytest.mark.parametrize("change, key, message", [
    ({"namespaces": {"users": [{"exclusive": True, "regex": 5}]}}, "namespaces.users[0].regex", "expected a string"),
    ({"namespaces": {"users": [{"regex": "@a.*"}]}}, "namespaces.users[0].exclusive", "expected true or false"),
    ({"namespaces": {"aliases": [{"exclusive": True, "regex": "#(unclosed"}]}}, "namespaces.aliases[0].regex",
     "not a valid regular expression"),
    ({"as_token": None}, "as_token", "is required"),
    ({"hs_token": ""}, "hs_token", "must not be empty"),
    ({"sender_localpart": "bad:part"}, "sender_localpart", "not a user ID localpart"),
    ({"url": "ftp://x"}, "url", "expected an http:// or https:// URL"),
    ({"namespaces": None}, "namespaces", "is required"),
    ({"rate_limited": "no"}, "rate_limited", "expected true or false"),
    ({"protocols": "irc"}, "protocols", "expected a list"),
])
def test_errors_name_the_file_and_key(tmp_path, change, key, message):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, {**IRC, **change})
    text = str(e.value)
    assert text.startswith("app_service_config_files[0]: ")
    assert str(tmp_path / "reg0.yaml") in text and f": {key}: " in text and message in text


def test_url_must_be_present_even_if_null(tmp_path):
    reg = {k: v for k, v in IRC.items() if k != "url"}
    with pytest.raises(ConfigError, match="url: is required"):
        load(tmp_path, reg)


def test_ids_and_tokens_are_unique(tmp_path):
    other = {**IRC, "as_token": "another"}
    with pytest.raises(ConfigError, match="id: 'IRC Bridge' is also the id of"):
        load(tmp_path, IRC, other)
    with pytest.raises(ConfigError, match="as_token: the same as_token as"):
        load(tmp_path, IRC, {**IRC, "id": "other"})


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match=r"app_service_config_files\[0\]: registration file .* does not exist"):
        parse_config({**BASE, "app_service_config_files": [str(tmp_path / "nope.yaml")]})
    path = write(tmp_path, "broken.yaml", "id: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        parse_config({**BASE, "app_service_config_files": [path]})
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config({**BASE, "app_service_config_files": [path]})


def test_unknown_registration_keys_warn(tmp_path):
    config = load(tmp_path, {**IRC, "surprise": 1})
    assert any("reg0.yaml: unknown registration key 'surprise'" in w for w in config.warnings)


def test_relative_paths_are_from_the_config_file(tmp_path):
    write(tmp_path, "bridge.yaml", IRC)
    config = parse_config({**BASE, "app_service_config_files": ["bridge.yaml"]},
                          config_path=str(tmp_path / "homeserver.yaml"))
    assert config.appservice.services[0].config_file == str(tmp_path / "bridge.yaml")


def test_both_ephemeral_spellings():
    s, _ = parse_registration({**IRC, "receive_ephemeral": True, "de.sorunome.msc2409.push_ephemeral": True},
                              "hs.test")
    assert s.receive_ephemeral_stable and s.receive_ephemeral_unstable
