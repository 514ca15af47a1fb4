"""Login and logout.

Spec: https://spec.matrix.org/latest/client-server-api/#login
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..services.auth import user_locked
from .auth import allowed_while_locked, calling_appservice, guest_allowed, public, requester
from .identifiers import third_party_identifier, user_id_from_identifier

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/{ver:(r0|v3)}/login")
@public
async def get_login_flows(request: web.Request) -> web.Response:
    flows: list[dict[str, Any]] = [{"type": "m.login.password"}, {"type": "m.login.token"}]
    from ..sso_api import login_flows

    flows += login_flows(request.app[HS])
    known = {f["type"] for f in flows}
    flows += [{"type": t} for t in request.app[HS].modules.callbacks.login_types() if t not in known]
    if request.app[HS].config.appservice.services:
        flows.append({"type": "m.login.application_service"})
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
    wants_refresh = refresh_token_param(body)
    limiters = hs.ratelimiters
    token_details = None
    limiters["rc_login.address"].ratelimit(request.remote or "")

    modules = hs.modules.callbacks
    after_login = None
    if login_type == "m.login.password":
        user_id, after_login = await password_login(hs, body)
    elif login_type == "m.login.token":
        token = body.get("token")
        if not isinstance(token, str):
            raise MatrixError.bad_json("'token' must be a string")
        token_details = await hs.auth.consume_login_token_details(token)
        user_id = token_details.user_id
        user = await hs.auth.users.get_user(user_id)
        if user is None or user.deactivated:
            raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    elif login_type == "m.login.application_service":
        user_id = await _appservice_login(hs, request, body)
    elif login_type == "org.matrix.login.jwt" and hs.config.sso.jwt_config is not None:
        from sso.jwt_login import jwt_login

        user_id = await jwt_login(hs, body.get("token"))
    elif isinstance(login_type, str) and login_type in modules.login_types():
        user = body.get("user")
        if isinstance(body.get("identifier"), dict):
            user = body["identifier"].get("user", user)
        if not isinstance(user, str) or not user:
            raise MatrixError.bad_json("'identifier.user' must be a non-empty string")
        found = await modules.check_auth(login_type, user, body)
        if found is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid login")
        user_id, after_login = await _qualified(hs, found[0]), found[1]
    else:
        raise MatrixError(400, Codes.UNKNOWN, f"Unknown login type {login_type!r}")

    account = await hs.auth.users.get_user(user_id)
    if account is not None and account.locked:  # no new session until an admin unlocks the account
        raise user_locked()
    await modules.spam_check("check_login_for_spam", "This login", user_id, device_id, display_name,
                             [(request.headers.get("User-Agent", ""), request.remote or "")], None)

    result = await hs.auth.login_session(user_id, device_id=device_id, display_name=display_name,
                                         refresh_token=wants_refresh)
    if token_details is not None:  # after SSO: remember the IdP session, for back-channel logout
        await hs.auth.record_device_auth_provider(user_id, result["device_id"], token_details)
    result["well_known"] = {"m.homeserver": {"base_url": hs.config.public_baseurl}}
    if token_details is not None:  # the OIDC mapping provider's extra attributes, never over ours
        result = {**token_details.extra_attributes, **result}
    if after_login is not None:
        try:
            await after_login(dict(result))
        except Exception:
            log.exception("a module's login callback failed")
    await modules.notify("on_user_login", user_id, login_type, None)
    return json_response(result)


async def password_login(hs, body: dict[str, Any]) -> tuple[str, Any]:
    """``m.login.password`` (the legacy ``/login`` and the OAuth 2.0 API's password form):
    an ``m.id.user`` or e-mail identifier and a password, checked by the password auth
    provider modules first (``check_3pid_auth``, ``auth_checkers``), then by our own
    database. The per-account and failed-attempt rate limits apply. Returns (user ID, the
    module's callback for after the login, or None); ``M_FORBIDDEN`` for a wrong password.
    """
    password = body.get("password")
    if not isinstance(password, str):
        raise MatrixError.bad_json("'password' must be a string")
    modules, limiters = hs.modules.callbacks, hs.ratelimiters
    thirdparty = third_party_identifier(body)
    if thirdparty is not None and modules.has("check_3pid_auth"):
        found = await modules.check_3pid_auth(*thirdparty, password)
        if found is not None:
            return await _qualified(hs, found[0]), found[1]
    if thirdparty is not None:  # an address on an account here (spec: m.id.thirdparty)
        if thirdparty[0] != "email":
            raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED, "Only e-mail addresses log in here")
        user_id = await hs.threepids.user_of(*thirdparty)
        limiters["rc_login.account"].ratelimit(f"{thirdparty[0]}:{thirdparty[1]}")
        if user_id is None:
            raise MatrixError(403, Codes.FORBIDDEN, "Invalid username or password")
    else:
        user_id = user_id_from_identifier(body, hs.server_name)
    limiters["rc_login.account"].ratelimit(user_id)
    failed = limiters["rc_login.failed_attempts"]
    if failed.check(user_id, update=False) is not None:
        failed.ratelimit(user_id)
    found = await modules.check_auth("m.login.password", user_id, body) if thirdparty is None else None
    if found is not None:  # a password auth provider module vouched for the user
        return await _qualified(hs, found[0]), found[1]
    try:
        await hs.auth.check_password_login(user_id, password)
    except MatrixError as e:
        if e.errcode == Codes.FORBIDDEN:
            failed.check(user_id)  # count the failure
        raise
    return user_id, None


def refresh_token_param(body: dict) -> bool:
    """``refresh_token`` of ``/login`` and ``/register``: the client supports refresh tokens."""
    value = body.get("refresh_token", False)
    if not isinstance(value, bool):
        raise MatrixError.bad_json("'refresh_token' must be a boolean")
    return value


@routes.post("/v3/refresh")
@public
async def post_refresh(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3refresh. Only
    the legacy API's refresh tokens: those of the OAuth 2.0 API are used at its token endpoint."""
    body = await read_json_body(request)
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        raise MatrixError.missing_param("'refresh_token' is required")
    if token.startswith("gwr_"):
        raise MatrixError(401, Codes.UNKNOWN_TOKEN, "Unknown refresh token (OAuth 2.0 refresh tokens are used at "
                          "the token endpoint)", soft_logout=False)
    return json_response(await request.app[HS].auth.refresh_tokens.refresh(token))


async def _qualified(hs, user_id: str) -> str:
    """A module's answer as a local user ID that exists (a module registers users it
    vouches for with ``ModuleApi.register_user`` first)."""
    if not isinstance(user_id, str):
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid login")
    if not user_id.startswith("@"):
        user_id = f"@{user_id.lower()}:{hs.server_name}"
    if user_id.partition(":")[2] != hs.server_name:
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid login")
    user = await hs.auth.users.get_user(user_id)
    if user is None:
        raise MatrixError(403, Codes.FORBIDDEN, "Invalid login")
    if user.deactivated:
        raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    return user_id


async def _appservice_login(hs, request: web.Request, body: dict[str, Any]) -> str:
    """``m.login.application_service``: a service logs in as one of its users with its
    ``as_token`` (no password). https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions"""
    service = calling_appservice(request)
    ident = body.get("identifier")
    user = ident.get("user") if isinstance(ident, dict) and ident.get("type") == "m.id.user" else body.get("user")
    if not isinstance(user, str) or not user:
        raise MatrixError.bad_json("'identifier.user' must be a non-empty string")
    # As given: services register their users' IDs without folding case.
    user_id = user if user.startswith("@") else f"@{user}:{hs.server_name}"
    hs.appservices.check_login_user(service, user_id)
    user = await hs.auth.users.get_user(user_id)
    if user is None:
        raise MatrixError.forbidden(f"{user_id} is not registered")
    if user.deactivated:
        raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    return user_id


@routes.post("/{ver:(r0|v3)}/logout")
@guest_allowed
@allowed_while_locked
async def post_logout(request: web.Request) -> web.Response:
    hs = request.app[HS]
    req = requester(request)
    if req.device_id:
        await hs.auth.devices.delete_devices(req.user_id, [req.device_id])
    else:
        await hs.auth.devices.delete_access_token(req.access_token)
    await hs.modules.callbacks.notify("on_logged_out", req.user_id, req.device_id, req.access_token)
    return json_response({})


@routes.post("/{ver:(r0|v3)}/logout/all")
@guest_allowed
@allowed_while_locked
async def post_logout_all(request: web.Request) -> web.Response:
    hs = request.app[HS]
    req = requester(request)
    devices = await hs.auth.devices.list_devices(req.user_id)
    await hs.auth.devices.delete_devices(req.user_id)
    for device in devices:
        await hs.modules.callbacks.notify("on_logged_out", req.user_id, device.device_id, req.access_token)
    return json_response({})
