"""The client routes' names for access-token authentication, which lives in
gateway/http/auth.py (the admin and media APIs share it)."""

from ..http.auth import (  # noqa: F401 - re-exported for the client routes
    REQUESTER,
    access_token_middleware,
    allowed_while_locked,
    calling_appservice,
    get_access_token,
    guest_allowed,
    public,
    requester,
    requester_for_token,
    token_auth_middleware,
)
