"""Directory config keys: defaults, rules, and errors that name the key."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from gateway.config.directory import DirectoryRule, rules_allow

BASE = {"server_name": "hs.test"}


def test_defaults():
    d = parse_config(BASE).directory
    assert d.user_directory_enabled and not d.user_directory_search_all_users
    assert rules_allow(d.room_list_publication_rules, "@a:hs.test", "!r:hs.test", [])
    assert not d.allow_public_rooms_over_federation and not d.allow_public_rooms_without_auth


def test_rules_first_match_decides():
    c = parse_config({**BASE, "room_list_publication_rules": [
        {"user_id": "@admin*", "action": "allow"},
        {"alias": "#public_*", "action": "allow"},
        {"action": "deny"},
    ], "user_directory": {"enabled": False, "search_all_users": True}})
    rules = c.directory.room_list_publication_rules
    assert rules[0] == DirectoryRule(user_id="@admin*")
    assert rules_allow(rules, "@admin1:hs.test", "!r:hs.test", [])
    assert rules_allow(rules, "@bob:hs.test", "!r:hs.test", ["#other:hs.test", "#public_x:hs.test"])
    assert not rules_allow(rules, "@bob:hs.test", "!r:hs.test", ["#other:hs.test"])
    # A room without aliases only matches rules whose alias is "*".
    assert not rules_allow((DirectoryRule(alias="#x*"),), "@bob:hs.test", "!r:hs.test", [])
    assert not rules_allow((), "@bob:hs.test", "!r:hs.test", [])  # an empty list denies
    assert not c.directory.user_directory_enabled and c.directory.user_directory_search_all_users


@pytest.mark.parametrize("data,key", [
    ({"room_list_publication_rules": [{"action": "maybe"}]}, "room_list_publication_rules[0].action"),
    ({"alias_creation_rules": [{"user": "@a:b"}]}, "alias_creation_rules[0].user"),
    ({"alias_creation_rules": "all"}, "alias_creation_rules"),
    ({"user_directory": {"search_all_users": "yes"}}, "user_directory.search_all_users"),
    ({"allow_public_rooms_over_federation": 1}, "allow_public_rooms_over_federation"),
])
def test_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, **data})
    assert e.value.path == key


def test_unknown_user_directory_key_warns():
    c = parse_config({**BASE, "user_directory": {"colour": "blue"}})
    assert "unknown config key 'user_directory.colour' (ignored)" in c.warnings
