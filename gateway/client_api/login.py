"""Login and logout.

Spec: https://spec.matrix.org/latest/client-server-api/#login
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from .auth import public, requester
from .identifiers import user_id_from_identifier

routes = web.RouteTableDef()


@routes.get("/{ver:(r0|v3)}/login")
@public
async def get_login_flows(request: web.Request) -> web.Response:
    flows: list[dict[str, Any]] = [{"type": "m.login.password"}, {"type": "m.login.token"}]
    from ..sso_api import login_flows

    flows += login_flows(request.app[HS])
    return json_response({"flows": flows})


@routes.post("/{ver:(r0|v3)}/login")
@public
async def post_login(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    login_type = body.get("type")
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and (not isinstance(device_id, str) or not device_id or len(device_id) > 255):
        raise MatrixError.invalid_param("device_id must be a non-empty string")
    if display_name is not None and not isinstance(display_name, str):
        raise MatrixError.invalid_param("initial_device_display_name must be a string")
    limiters = hs.ratelimiters
    limiters["rc_login.address"].ratelimit(request.remote or "")

    if login_type == "m.login.password":
        password = body.get("password")
        if not isinstance(password, str):
            raise MatrixError.bad_json("'password' must be a string")
        user_id = user_id_from_identifier(body, hs.server_name)
        limiters["rc_login.account"].ratelimit(user_id)
        failed = limiters["rc_login.failed_attempts"]
        if failed.check(user_id, update=False) is not None:
            failed.ratelimit(user_id)
        try:
            await hs.auth.check_password_login(user_id, password)
        except MatrixError as e:
            if e.errcode == Codes.FORBIDDEN:
                failed.check(user_id)  # count the failure
            raise
    elif login_type == "m.login.token":
        token = body.get("token")
        if not isinstance(token, str):
            raise MatrixError.bad_json("'token' must be a string")
        user_id = await hs.auth.consume_login_token(token)
        user = await hs.auth.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    elif login_type == "org.matrix.login.jwt" and hs.config.sso.jwt_config is not None:
        from sso.jwt_login import jwt_login

        user_id = await jwt_login(hs, body.get("token"))
    else:
        raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type!r}")

    result = await hs.auth.login_session(user_id, device_id=device_id, display_name=display_name)
    result["well_known"] = {"m.homeserver": {"base_url": hs.config.public_baseurl}}
    return json_response(result)


@routes.post("/{ver:(r0|v3)}/logout")
async def post_logout(request: web.Request) -> web.Response:
    hs = request.app[HS]
    req = requester(request)
    if req.device_id:
        await hs.auth.devices.delete_devices(req.user_id, [req.device_id])
    else:
        await hs.auth.devices.delete_access_token(req.access_token)
    return json_response({})


@routes.post("/{ver:(r0|v3)}/logout/all")
async def post_logout_all(request: web.Request) -> web.Response:
    hs = request.app[HS]
    await hs.auth.devices.delete_devices(requester(request).user_id)
    return json_response({})
