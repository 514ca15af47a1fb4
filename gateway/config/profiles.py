"""Profile options (Synapse's top-level keys): who may read profiles, over the
Client-Server API and over federation, what goes into invites and member events, which
fields users may change, and which avatars they may pick.

https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#require_auth_for_profile_requests
"""

from __future__ import annotations

from dataclasses import dataclass

from ._values import Section, string_item


@dataclass(frozen=True)
class ProfileConfig:
    #: ``require_auth_for_profile_requests``: profile reads through the client API need
    #: an access token (default: anyone may read).
    require_auth_for_profile_requests: bool = False
    #: ``limit_profile_requests_to_users_who_share_rooms``: a user may read only the
    #: profiles of users they share a room with (client API only; reads then need a token).
    limit_profile_requests_to_users_who_share_rooms: bool = False
    #: ``allow_profile_lookup_over_federation``: other servers may query our users' profiles.
    allow_profile_lookup_over_federation: bool = True
    #: ``include_profile_data_on_invite``: invites carry the invitee's display name and avatar.
    include_profile_data_on_invite: bool = True
    #: ``enable_set_displayname`` / ``enable_set_avatar_url``: users (not admins) may
    #: change a display name or avatar once set.
    enable_set_displayname: bool = True
    enable_set_avatar_url: bool = True
    #: ``allow_per_room_profiles``: a member event a user sends may carry a display name
    #: or avatar other than their profile's (false: the profile's are used).
    allow_per_room_profiles: bool = True
    #: ``max_avatar_size`` (bytes) and ``allowed_avatar_mimetypes``: limits on the media an
    #: avatar names (it must then be known to our media repository); None: no limit.
    max_avatar_size: int | None = None
    allowed_avatar_mimetypes: tuple[str, ...] | None = None


def parse_profile_config(root: Section) -> ProfileConfig:
    return ProfileConfig(
        require_auth_for_profile_requests=root.bool("require_auth_for_profile_requests", False),
        limit_profile_requests_to_users_who_share_rooms=root.bool(
            "limit_profile_requests_to_users_who_share_rooms", False),
        allow_profile_lookup_over_federation=root.bool("allow_profile_lookup_over_federation", True),
        include_profile_data_on_invite=root.bool("include_profile_data_on_invite", True),
        enable_set_displayname=root.bool("enable_set_displayname", True),
        enable_set_avatar_url=root.bool("enable_set_avatar_url", True),
        allow_per_room_profiles=root.bool("allow_per_room_profiles", True),
        max_avatar_size=root.size_bytes("max_avatar_size", None) or None,
        allowed_avatar_mimetypes=_mimetypes(root.list("allowed_avatar_mimetypes", None, of=string_item)),
    )


def _mimetypes(value: list[str] | None) -> tuple[str, ...] | None:
    """An empty list is no restriction (as Synapse reads it)."""
    return tuple(value) if value else None
