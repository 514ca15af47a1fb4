"""Profile options (Synapse's top-level keys): who may read profiles, over the
Client-Server API and over federation, what goes into invites, and which fields users
may change.

https://element-hq.github.io/synapse/latest/usage/configuration/config_documentation.html#require_auth_for_profile_requests
"""

from __future__ import annotations

from dataclasses import dataclass

from ._values import Section


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


def parse_profile_config(root: Section) -> ProfileConfig:
    return ProfileConfig(
        require_auth_for_profile_requests=root.bool("require_auth_for_profile_requests", False),
        limit_profile_requests_to_users_who_share_rooms=root.bool(
            "limit_profile_requests_to_users_who_share_rooms", False),
        allow_profile_lookup_over_federation=root.bool("allow_profile_lookup_over_federation", True),
        include_profile_data_on_invite=root.bool("include_profile_data_on_invite", True),
        enable_set_displayname=root.bool("enable_set_displayname", True),
        enable_set_avatar_url=root.bool("enable_set_avatar_url", True),
    )
