"""Moderating accounts, and acting as a user, with Synapse's admin API paths.

Paths: POST|DELETE /_synapse/admin/v1/users/{user_id}/shadow_ban, PUT
/v1/suspend/{user_id} (``{"suspend": bool}``), POST /v1/users/{user_id}/login (a session
as the user, for the admin). Locking is ``locked`` of ``PUT /v2/users/{user_id}``; the
spec's own paths are in gateway/client_api/admin.py.
https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http.auth import requester
from ..http import Codes, MatrixError, json_response, read_json_body
from .users import existing_local_user

routes = web.RouteTableDef()


@routes.post("/v1/users/{user_id}/shadow_ban")
async def shadow_ban(request: web.Request) -> web.Response:
    """What the user sends into rooms is answered as sent and dropped (their events get
    made-up IDs; nobody else sees them). They are not told."""
    user_id = await existing_local_user(request)
    await request.app[HS].auth.users.set_flag(user_id, "shadow_banned", True)
    return json_response({})


@routes.delete("/v1/users/{user_id}/shadow_ban")
async def lift_shadow_ban(request: web.Request) -> web.Response:
    user_id = await existing_local_user(request)
    await request.app[HS].auth.users.set_flag(user_id, "shadow_banned", False)
    return json_response({})


@routes.put("/v1/suspend/{user_id}")
async def suspend(request: web.Request) -> web.Response:
    """Suspend (``suspend: true``) or unsuspend a user; answers ``{"user_<id>_suspended": bool}``
    as Synapse does."""
    user_id = await existing_local_user(request)
    body = await read_json_body(request)
    if not isinstance(body.get("suspend"), bool):
        raise MatrixError.invalid_param("'suspend' must be a boolean")
    await request.app[HS].auth.users.set_flag(user_id, "suspended", body["suspend"])
    return json_response({f"user_{user_id}_suspended": body["suspend"]})


@routes.post("/v1/users/{user_id}/login")
async def login_as(request: web.Request) -> web.Response:
    """An access token acting as the user: no device (the user's device list does not
    show it), owned by the admin (the admin's ``/logout/all`` ends it, the user's does
    not), until ``valid_until_ms`` if given."""
    hs = request.app[HS]
    user_id = await existing_local_user(request)
    body = await read_json_body(request, allow_empty=True)
    valid_until = body.get("valid_until_ms")
    if valid_until is not None and (not isinstance(valid_until, int) or isinstance(valid_until, bool)
                                    or valid_until < 0):
        raise MatrixError.invalid_param("'valid_until_ms' must be a timestamp in milliseconds")
    admin = requester(request)
    if user_id == admin.user_id:
        raise MatrixError.invalid_param("Cannot use admin API to login as self")
    user = await hs.auth.users.get_user(user_id)
    if user is not None and user.deactivated:
        raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    token = await hs.auth.puppet_session(admin.puppeted_by or admin.user_id, user_id, valid_until)
    return json_response({"access_token": token})
