"""Profiles and filters.

Spec: https://spec.matrix.org/latest/client-server-api/#profiles and
https://spec.matrix.org/latest/client-server-api/#filtering
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..services.account_moderation import check_not_suspended
from ..services.filtering import SyncFilter
from ..services.profiles import check_field_name
from ..storage.profiles import MEMBER_FIELDS, FilterStore
from .auth import get_access_token, guest_allowed, public, requester, requester_for_token

routes = web.RouteTableDef()

#: Profile paths: r0 and v3 serve the same API (every field, v1.16's included).
PROFILE = "/{ver:(r0|v3)}/profile/{user_id}"


async def _reader(request: web.Request) -> str | None:
    """Who is reading: nobody (profiles are public by default), or the token's user when
    ``require_auth_for_profile_requests`` or ``limit_profile_requests_to_users_who_share_rooms``
    asks for one (401 without)."""
    config = request.app[HS].config.profiles
    if not (config.require_auth_for_profile_requests or config.limit_profile_requests_to_users_who_share_rooms):
        return None
    token = get_access_token(request)
    if not token:
        raise MatrixError(401, Codes.MISSING_TOKEN, "Missing access token")
    return (await requester_for_token(request, token)).user_id


@routes.get(PROFILE)
@public
async def get_profile(request: web.Request) -> web.Response:
    hs = request.app[HS]
    return json_response(await hs.profiles.get_profile(await _reader(request), request.match_info["user_id"]))


@routes.get(PROFILE + "/{field}")
@public
async def get_profile_field(request: web.Request) -> web.Response:
    hs = request.app[HS]
    return json_response(await hs.profiles.get_field(await _reader(request), request.match_info["user_id"],
                                                      request.match_info["field"]))


@routes.put(PROFILE + "/{field}")
@guest_allowed  # their display name only (the service says no to the rest)
async def set_profile_field(request: web.Request) -> web.Response:
    field = request.match_info["field"]
    check_field_name(field)
    body = await read_json_body(request)
    if field not in body:
        raise MatrixError.missing_param(f"The body needs a '{field}' property")
    who = requester(request)
    check_not_suspended(who)
    await request.app[HS].profiles.set_field(who, request.match_info["user_id"], field, body[field])
    await _shadow_ban_delay(request, field)
    return json_response({})


@routes.delete(PROFILE + "/{field}")
@guest_allowed
async def delete_profile_field(request: web.Request) -> web.Response:
    who = requester(request)
    check_not_suspended(who)
    await request.app[HS].profiles.delete_field(who, request.match_info["user_id"], request.match_info["field"])
    await _shadow_ban_delay(request, request.match_info["field"])
    return json_response({})


async def _shadow_ban_delay(request: web.Request, field: str) -> None:
    """A shadow-banned user's name or avatar change is not sent into their rooms: answered
    after the same delay as their other dropped actions."""
    if requester(request).shadow_banned and field in MEMBER_FIELDS:
        await request.app[HS].shadow_ban_delay()


@routes.post("/{ver:(r0|v3)}/user/{user_id}/filter")
@guest_allowed
async def create_filter(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("Cannot create filters for other users")
    body = await read_json_body(request)
    SyncFilter.parse(body)  # refused now (400) rather than at every /sync
    filter_id = await FilterStore(request.app[HS].db).add_filter(user_id, body)
    return json_response({"filter_id": str(filter_id)})


@routes.get("/{ver:(r0|v3)}/user/{user_id}/filter/{filter_id}")
@guest_allowed
async def get_filter(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("Cannot get filters for other users")
    try:
        filter_id = int(request.match_info["filter_id"])
    except ValueError:
        raise MatrixError.not_found("No such filter") from None
    found = await FilterStore(request.app[HS].db).get_filter(user_id, filter_id)
    if found is None:
        raise MatrixError.not_found("No such filter")
    return json_response(found)
