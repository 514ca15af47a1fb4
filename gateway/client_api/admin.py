"""Server administration in the Client-Server API: whois, and account moderation
(locking and suspending accounts, v1.18).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3adminwhoisuserid,
https://spec.matrix.org/latest/client-server-api/#account-moderation
"""

from __future__ import annotations

from aiohttp import web

from federation.ids import InvalidIdentifierError, UserID

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()


def _check_local(request: web.Request, user_id: str) -> None:
    """400 ``M_INVALID_PARAM`` unless ``user_id`` is a user ID of this server."""
    try:
        parsed = UserID.parse(user_id)
    except InvalidIdentifierError:
        raise MatrixError.invalid_param(f"{user_id!r} is not a valid user ID") from None
    if parsed.server_name != request.app[HS].server_name:
        raise MatrixError.invalid_param("User does not belong to the local server.")


@routes.get("/{ver:(r0|v3)}/admin/whois/{user_id}")
async def whois(request: web.Request) -> web.Response:
    """For server admins and the user themselves (403 before any lookup, so nobody
    learns which users exist); local users only."""
    hs = request.app[HS]
    who = requester(request)
    user_id = request.match_info["user_id"]
    if user_id != who.user_id and not who.is_admin:
        raise MatrixError.forbidden("You are not a server admin")
    _check_local(request, user_id)
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    return json_response(await hs.auth.client_ips.whois(user_id))


#: Path -> the ``users`` flag it sets and the body's key for it.
_MODERATION = {"lock": "locked", "suspend": "suspended"}


async def _moderated_user(request: web.Request, *, changing: bool) -> str:
    """The target of a lock or suspend request, checked in the spec's order: the
    requester is an admin (before any lookup: no user enumeration), the user is local,
    exists and is active, and is not an admin (nor, for a change, the requester)."""
    hs = request.app[HS]
    who = requester(request)
    if not who.is_admin:
        raise MatrixError.forbidden("Requesting user is not a server administrator.")
    user_id = request.match_info["user_id"]
    _check_local(request, user_id)
    if changing and user_id == who.user_id:
        raise MatrixError.forbidden("You cannot change this for your own account.")
    user = await hs.auth.users.get_user(user_id)
    if user is None or user.deactivated:
        raise MatrixError.not_found("User not found.")
    if user.admin:
        raise MatrixError.forbidden("Server administrators cannot be locked or suspended this way.")
    return user_id


def _moderation_routes(action: str) -> None:
    flag = _MODERATION[action]

    async def get_status(request: web.Request) -> web.Response:
        user_id = await _moderated_user(request, changing=False)
        user = await request.app[HS].auth.users.get_user(user_id)
        return json_response({flag: getattr(user, flag)})

    async def set_status(request: web.Request) -> web.Response:
        user_id = await _moderated_user(request, changing=True)
        body = await read_json_body(request)
        if not isinstance(body.get(flag), bool):
            raise MatrixError.bad_json(f"'{flag}' must be a boolean")
        await request.app[HS].auth.users.set_flag(user_id, flag, body[flag])
        return json_response({flag: body[flag]})

    get_status.__name__, set_status.__name__ = f"get_{flag}", f"set_{flag}"
    routes.get(f"/v1/admin/{action}/{{user_id}}")(get_status)
    routes.put(f"/v1/admin/{action}/{{user_id}}")(set_status)


for _action in _MODERATION:
    _moderation_routes(_action)
