"""Profiles and filters.

Spec: https://spec.matrix.org/latest/client-server-api/#profiles and
https://spec.matrix.org/latest/client-server-api/#filtering
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..storage.profiles import FilterStore, ProfileStore
from .auth import guest_allowed, requester

routes = web.RouteTableDef()

FIELDS = ("displayname", "avatar_url")
MAX_DISPLAYNAME = 256
MAX_AVATAR_URL = 1000


def _local_user(request: web.Request) -> str:
    user_id = request.match_info["user_id"]
    if not user_id.endswith(":" + request.app[HS].server_name):
        raise MatrixError.not_found("Profile lookup over federation is not available yet")
    return user_id


@routes.get("/{ver:(r0|v3)}/profile/{user_id}")
@guest_allowed
async def get_profile(request: web.Request) -> web.Response:
    profile = await ProfileStore(request.app[HS].db).get_profile(_local_user(request))
    if profile is None:
        raise MatrixError.not_found("Profile was not found")
    return json_response(profile)


@routes.get("/{ver:(r0|v3)}/profile/{user_id}/{field}")
@guest_allowed
async def get_profile_field(request: web.Request) -> web.Response:
    field = request.match_info["field"]
    profile = await ProfileStore(request.app[HS].db).get_profile(_local_user(request))
    if profile is None:
        raise MatrixError.not_found("Profile was not found")
    if field not in profile:
        raise MatrixError.not_found(f"The user has no {field}")
    return json_response({field: profile[field]})


@routes.put("/{ver:(r0|v3)}/profile/{user_id}/{field}")
@guest_allowed
async def set_profile_field(request: web.Request) -> web.Response:
    user_id, field = request.match_info["user_id"], request.match_info["field"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("You can only change your own profile")
    if requester(request).is_guest and field != "displayname":
        raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guests may only change their display name")
    if field not in FIELDS:
        raise MatrixError(400, "M_UNRECOGNIZED", f"Unknown profile field {field!r}")
    body = await read_json_body(request)
    value = body.get(field)
    limit = MAX_DISPLAYNAME if field == "displayname" else MAX_AVATAR_URL
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise MatrixError.bad_json(f"'{field}' must be a string of at most {limit} characters")
    if field == "avatar_url" and value and not value.startswith("mxc://"):
        raise MatrixError.bad_json("'avatar_url' must be an mxc:// URI")
    hs = request.app[HS]
    profiles = ProfileStore(hs.db)
    await profiles.set_field(user_id, field, value or None)
    if hs.modules.callbacks.has("on_profile_update"):
        from ..modules import ProfileInfo

        profile = await profiles.get_profile(user_id) or {}
        await hs.modules.callbacks.notify("on_profile_update", user_id,
                                          ProfileInfo(profile.get("displayname"), profile.get("avatar_url")),
                                          False, False)
    return json_response({})


@routes.post("/{ver:(r0|v3)}/user/{user_id}/filter")
@guest_allowed
async def create_filter(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    if requester(request).user_id != user_id:
        raise MatrixError.forbidden("Cannot create filters for other users")
    body = await read_json_body(request)
    for key in ("room", "presence", "account_data"):
        if key in body and not isinstance(body[key], dict):
            raise MatrixError.bad_json(f"'{key}' must be an object")
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
