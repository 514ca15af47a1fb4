"""How long legacy logins last: access token and refresh token lifetimes (Synapse's
top-level keys of "User session management").

Spec: https://spec.matrix.org/latest/client-server-api/#refreshing-access-tokens. The
OAuth 2.0 API has its own lifetime (``oauth.access_token_lifetime``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ._values import ConfigError, Section


@dataclass(frozen=True)
class SessionConfig:
    #: ``session_lifetime``: a login ends this long after it began, refreshed or not (None: never).
    session_lifetime_ms: int | None = None
    #: ``refreshable_access_token_lifetime``: access tokens of clients that asked for a refresh
    #: token (``refresh_token: true``).
    refreshable_access_token_lifetime_ms: int = 5 * 60 * 1000
    #: ``refresh_token_lifetime``: a refresh token unused this long stops working (None: never).
    refresh_token_lifetime_ms: int | None = None
    #: ``nonrefreshable_access_token_lifetime``: access tokens of clients without refresh tokens.
    nonrefreshable_access_token_lifetime_ms: int | None = None


def parse_session_config(root: Section) -> SessionConfig:
    def lifetime(name: str, default: int | None) -> int | None:
        value = root.duration_ms(name, default)
        if value is not None and value < 1000:
            raise ConfigError(name, "expected at least 1s (leave it unset for no limit)")
        return value

    return SessionConfig(
        session_lifetime_ms=lifetime("session_lifetime", None),
        refreshable_access_token_lifetime_ms=lifetime("refreshable_access_token_lifetime", 5 * 60 * 1000),
        refresh_token_lifetime_ms=lifetime("refresh_token_lifetime", None),
        nonrefreshable_access_token_lifetime_ms=lifetime("nonrefreshable_access_token_lifetime", None),
    )
