"""Reading a user's data and finding users, for admins (Synapse's user admin API).

Paths: GET /_synapse/admin/v1/users/{user_id}/accountdata, /v1/users/{user_id}/pushers,
/v1/username_available?username=, /v1/threepid/{medium}/users/{address},
/v1/auth_providers/{provider}/users/{external_id} (who an SSO identity is linked to).
https://element-hq.github.io/synapse/latest/admin_api/user_admin_api.html
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response
from ..services.push import pusher_json
from ..storage.account_data import GLOBAL
from ..storage.sso import SsoStore
from .users import canonical_threepid, existing_local_user

routes = web.RouteTableDef()


@routes.get("/v1/users/{user_id}/accountdata")
async def account_data(request: web.Request) -> web.Response:
    """All the user's account data: global, and per room."""
    hs = request.app[HS]
    user_id = await existing_local_user(request)
    store = hs.account_data.store
    rows = await store.get_changes(user_id, since=None, upto=await store.get_current_position())
    global_data: dict[str, Any] = {}
    rooms: dict[str, dict[str, Any]] = {}
    for row in rows:
        (global_data if row.room_id == GLOBAL else rooms.setdefault(row.room_id, {}))[row.type] = row.content
    return json_response({"account_data": {"global": global_data, "rooms": rooms}})


@routes.get("/v1/users/{user_id}/pushers")
async def pushers(request: web.Request) -> web.Response:
    user_id = await existing_local_user(request)
    found = await request.app[HS].push.get_pushers(user_id)
    return json_response({"pushers": [pusher_json(p) for p in found], "total": len(found)})


@routes.get("/v1/username_available")
async def username_available(request: web.Request) -> web.Response:
    """As the client API's ``/register/available``, whether registration is open or not,
    and without its rate limit: 400 ``M_USER_IN_USE`` or ``M_INVALID_USERNAME`` otherwise."""
    username = request.query.get("username")
    if username is None:
        raise MatrixError.missing_param("'username' is required")
    await request.app[HS].usernames.check(username)
    return json_response({"available": True})


@routes.get("/v1/threepid/{medium}/users/{address}")
async def user_by_threepid(request: web.Request) -> web.Response:
    medium, address = canonical_threepid(request.match_info["medium"], request.match_info["address"])
    user_id = await request.app[HS].auth.users.get_user_by_threepid(medium, address)
    if user_id is None:
        raise MatrixError.not_found("User not found")
    return json_response({"user_id": user_id})


@routes.get("/v1/auth_providers/{provider}/users/{external_id}")
async def user_by_external_id(request: web.Request) -> web.Response:
    """The user an identity provider's account (``provider``: the IdP's ``idp_id``) logs in as."""
    user_id = await SsoStore(request.app[HS].db).get_user_by_external_id(
        request.match_info["provider"], request.match_info["external_id"])
    if user_id is None:
        raise MatrixError.not_found("User not found")
    return json_response({"user_id": user_id})
