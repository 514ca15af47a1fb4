"""Which user ID a new account may take: the localpart grammar, the length limit, names
reserved for guests and for application services, and whether it is free. Shared by
/register, the admin API's shared-secret registration, the OAuth pages, SSO and JWT logins.

Spec: https://spec.matrix.org/latest/appendices/#user-identifiers
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from federation.ids import is_valid_localpart

from ..http import Codes, MatrixError

if TYPE_CHECKING:
    from ..storage.users import UserStore
    from .appservices import AppServices

MAX_USER_ID_LENGTH = 255


class Usernames:
    def __init__(self, *, server_name: str, users: UserStore, appservices: AppServices):
        """``appservices``: the namespaces services hold exclusively."""
        self.server_name = server_name
        self.users = users
        self.appservices = appservices

    async def check(self, localpart: object) -> str:
        """The full user ID if ``localpart`` is valid and free, else the matching Matrix error."""
        if not isinstance(localpart, str) or not localpart:
            raise MatrixError(400, Codes.INVALID_USERNAME, "User ID must not be empty")
        if localpart != localpart.lower() or not is_valid_localpart(localpart):
            raise MatrixError(
                400, Codes.INVALID_USERNAME, "User ID can only contain characters a-z, 0-9, or '=_-./+'"
            )
        if localpart.isdigit():
            raise MatrixError(400, Codes.INVALID_USERNAME, "Numeric user IDs are reserved for guest users")
        user_id = f"@{localpart}:{self.server_name}"
        if len(user_id) > MAX_USER_ID_LENGTH:
            raise MatrixError(400, Codes.INVALID_USERNAME,
                              f"User ID may not be longer than {MAX_USER_ID_LENGTH} characters")
        self.appservices.check_user_not_exclusive(user_id)  # M_EXCLUSIVE
        if await self.users.get_user(user_id) is not None:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken")
        return user_id
