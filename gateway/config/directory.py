"""Directory options (Synapse's key names): ``user_directory``, ``room_list_publication_rules``,
``alias_creation_rules``, ``allow_public_rooms_without_auth``,
``allow_public_rooms_over_federation``."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ._values import ConfigError, Section


@dataclass(frozen=True)
class DirectoryRule:
    """One entry of ``room_list_publication_rules`` / ``alias_creation_rules`` (globs)."""

    user_id: str = "*"
    alias: str = "*"
    room_id: str = "*"
    action: str = "allow"

    def matches(self, user_id: str, room_id: str | None, aliases: list[str]) -> bool:
        if not fnmatch.fnmatchcase(user_id, self.user_id):
            return False
        if room_id is None:
            if self.room_id != "*":
                return False
        elif not fnmatch.fnmatchcase(room_id, self.room_id):
            return False
        if not aliases:
            return self.alias == "*"
        return any(fnmatch.fnmatchcase(a, self.alias) for a in aliases)


def rules_allow(rules: tuple[DirectoryRule, ...], user_id: str, room_id: str | None, aliases: list[str]) -> bool:
    """The first matching rule decides; no match denies."""
    for rule in rules:
        if rule.matches(user_id, room_id, aliases):
            return rule.action == "allow"
    return False


ALLOW_ALL = (DirectoryRule(),)


@dataclass(frozen=True)
class DirectoryConfig:
    user_directory_enabled: bool = True
    user_directory_search_all_users: bool = False
    room_list_publication_rules: tuple[DirectoryRule, ...] = ALLOW_ALL
    alias_creation_rules: tuple[DirectoryRule, ...] = ALLOW_ALL
    allow_public_rooms_without_auth: bool = False
    allow_public_rooms_over_federation: bool = False


def _rules(root: Section, key: str) -> tuple[DirectoryRule, ...]:
    if not root.has(key):
        root.used.add(key)
        return ALLOW_ALL
    out = []
    for i, item in enumerate(root.list(key)):
        s = Section(item, f"{key}[{i}]")
        rule = DirectoryRule(
            user_id=s.str("user_id", "*"),
            alias=s.str("alias", "*"),
            room_id=s.str("room_id", "*"),
            action=s.str("action", "allow", choices=("allow", "deny")),
        )
        extra = s.unknown_keys()
        if extra:
            raise ConfigError(extra[0], "unknown key in a directory rule (expected user_id, alias, room_id, action)")
        out.append(rule)
    return tuple(out)


def parse_directory_config(root: Section, sections: list[Section]) -> DirectoryConfig:
    """Read the directory keys; sub-sections whose unknown keys deserve a warning go in ``sections``."""
    ud = root.section("user_directory")
    sections.append(ud)
    config = DirectoryConfig(
        user_directory_enabled=ud.bool("enabled", True),
        user_directory_search_all_users=ud.bool("search_all_users", False),
        room_list_publication_rules=_rules(root, "room_list_publication_rules"),
        alias_creation_rules=_rules(root, "alias_creation_rules"),
        allow_public_rooms_without_auth=root.bool("allow_public_rooms_without_auth", False),
        allow_public_rooms_over_federation=root.bool("allow_public_rooms_over_federation", False),
    )
    ud.bool("prefer_local_users", False)
    ud.ignore("exclude_remote_users")
    ud.ignore("show_locked_users")
    return config
