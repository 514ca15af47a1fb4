"""The ``server_notices`` section (Synapse's keys): who sends server notices and how their
rooms look. Notices are off unless ``system_mxid_localpart`` is set.

https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#server_notices
"""

from __future__ import annotations

from dataclasses import dataclass

from federation.ids import is_valid_localpart

from ._values import ConfigError, Section


@dataclass(frozen=True)
class ServerNoticesConfig:
    system_mxid_localpart: str
    system_mxid_display_name: str | None = None
    system_mxid_avatar_url: str | None = None
    room_name: str = "Server Notices"
    room_avatar_url: str | None = None
    room_topic: str | None = None
    auto_join: bool = False


def parse_server_notices(root: Section) -> tuple[ServerNoticesConfig | None, list[str]]:
    """The config (None when notices are off) and warnings about unknown keys."""
    if not root.has("server_notices"):
        root.used.add("server_notices")
        return None, []
    s = root.section("server_notices")
    localpart = s.str("system_mxid_localpart", None)
    if localpart is None:
        return None, [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
    if not is_valid_localpart(localpart):
        raise ConfigError(s.key("system_mxid_localpart"), f"{localpart!r} is not a valid user ID localpart")
    avatar = s.str("system_mxid_avatar_url", None)
    room_avatar = s.str("room_avatar_url", None)
    for key, value in (("system_mxid_avatar_url", avatar), ("room_avatar_url", room_avatar)):
        if value is not None and not value.startswith("mxc://"):
            raise ConfigError(s.key(key), "expected an mxc:// URI")
    config = ServerNoticesConfig(
        system_mxid_localpart=localpart,
        system_mxid_display_name=s.str("system_mxid_display_name", None),
        system_mxid_avatar_url=avatar,
        room_name=s.str("room_name", "Server Notices"),
        room_avatar_url=room_avatar,
        room_topic=s.str("room_topic", None),
        auto_join=s.bool("auto_join", False),
    )
    return config, [f"unknown config key {k!r} (ignored)" for k in s.unknown_keys()]
