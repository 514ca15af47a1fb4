"""whoami, password change, deactivation, devices, capabilities.

Spec: https://spec.matrix.org/latest/client-server-api/#current-account-information
and "Device Management", "Capabilities negotiation".
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.room_versions import KNOWN_ROOM_VERSIONS

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..passwords import hash_password
from ..server import HomeServer
from ..services.identity_servers import check_id_server
from ..services.uia import NotTheUser
from .auth import REQUESTER, get_access_token, guest_allowed, public, requester

routes = web.RouteTableDef()


async def _password_stage(hs: HomeServer, auth: dict[str, Any], user_id: str | None) -> None:
    from .identifiers import user_id_from_identifier

    claimed = user_id_from_identifier(auth, hs.server_name)
    if claimed != user_id:
        raise NotTheUser()
    password = auth.get("password")
    if not isinstance(password, str):
        raise MatrixError.bad_json("'password' must be a string")
    await hs.auth.check_password_login(claimed, password)


async def reauth_flows(hs: HomeServer, user_id: str) -> list[list[str]]:
    """How this user can prove it is them again (as Synapse): the password if the account
    has one, single sign-on if it is linked to an identity provider configured here."""
    from ..storage.sso import SsoStore
    from ..sso_api import configured_idp_ids

    flows: list[list[str]] = []
    user = await hs.auth.users.get_user(user_id)
    if user is not None and user.password_hash:
        flows.append(["m.login.password"])
    idps = configured_idp_ids(hs)
    if idps and any(idp in idps for idp, _ in await SsoStore(hs.db).get_external_ids(user_id)):
        flows.append(["m.login.sso"])
    return flows or [["m.login.password"]]


#: Where the account page does what a legacy endpoint needing UI-auth would (spec: account
#: management URL actions).
_ACCOUNT_ACTIONS = {"POST /account/deactivate": "org.matrix.account_deactivate",
                    "POST /account/3pid/add": "org.matrix.profile",
                    "POST /delete_devices": "org.matrix.devices_list",
                    "POST /keys/device_signing/upload": "org.matrix.cross_signing_reset"}


async def _oauth_reauth(request: web.Request, body: dict[str, Any], action: str) -> None:
    """Tokens of the OAuth 2.0 API cannot do user-interactive auth (spec: "OAuth 2.0 API"): a
    cross-signing reset goes through the ``m.oauth`` stage (the user allows it on the account
    page); every other such action is done on the account page, which the error names."""
    from ..oauth.metadata import Paths
    from ..oauth.pages import with_query

    hs = request.app[HS]
    user_id = requester(request).user_id
    account = hs.config.public_baseurl.rstrip("/") + Paths.ACCOUNT
    if action == "POST /keys/device_signing/upload":
        if "m.oauth" not in hs.uia.checkers:
            hs.uia.register_stage("m.oauth", lambda auth, uid: _oauth_stage(hs, uid))
        url = with_query(account, action="org.matrix.cross_signing_reset")
        await hs.uia.authenticate(action, body, [["m.oauth"]], user_id=user_id, params={"m.oauth": {"url": url}})
        return
    if action.startswith("DELETE /devices/"):
        url = with_query(account, action="org.matrix.device_delete", device_id=action[len("DELETE /devices/"):])
    else:
        url = with_query(account, action=_ACCOUNT_ACTIONS.get(action))
    raise MatrixError(403, "M_FORBIDDEN", f"This session signed in through the OAuth 2.0 API, which cannot "
                      f"confirm this here: use the account management page, {url}", account_management_uri=url)


async def _oauth_stage(hs: HomeServer, user_id: str | None) -> None:
    """``m.oauth``: passes while the user's approval on the account page lasts."""
    if user_id is None or not await hs.oauth.cross_signing_reset_allowed(user_id):
        raise MatrixError(401, "M_UNAUTHORIZED", "Allow the reset on the account management page first")


async def require_reauth(request: web.Request, body: dict[str, Any], action: str) -> None:
    """User-interactive auth (password or SSO) before a sensitive action. Not for an
    application service acting for its users: it has full control of them (spec:
    "Device management", "Cross-signing", and deactivating them, as Synapse)."""
    hs = request.app[HS]
    if requester(request).app_service_id is not None:
        return
    if requester(request).oauth_session_id is not None:
        await _oauth_reauth(request, body, action)
        return
    if "m.login.password" not in hs.uia.checkers:
        hs.uia.register_stage("m.login.password", lambda auth, uid: _password_stage(hs, auth, uid))
    user_id = requester(request).user_id
    await hs.uia.authenticate(action, body, await reauth_flows(hs, user_id), user_id=user_id)


@routes.get("/{ver:(r0|v3)}/account/whoami")
@guest_allowed
async def whoami(request: web.Request) -> web.Response:
    req = requester(request)
    body: dict[str, Any] = {"user_id": req.user_id, "is_guest": req.is_guest}
    if req.device_id:
        body["device_id"] = req.device_id
    return json_response(body)


@routes.post("/{ver:(r0|v3)}/account/password")
@public
async def change_password(request: web.Request) -> web.Response:
    """With an access token: the user re-authenticates (password or SSO). Without one: a
    password reset, authenticated by an e-mail address of the account (``m.login.email.identity``
    with a session of ``/account/password/email/requestToken``)."""
    hs = request.app[HS]
    body = await read_json_body(request)
    new_password = body.get("new_password")
    if not isinstance(new_password, str) or not new_password:
        raise MatrixError.missing_param("'new_password' is required")
    if get_access_token(request):
        request[REQUESTER] = await hs.auth.get_requester(get_access_token(request))
        if requester(request).is_guest:
            raise MatrixError(403, Codes.GUEST_ACCESS_FORBIDDEN, "Guest accounts may not do this")
        await require_reauth(request, body, "POST /account/password")
        user_id, keep_device = requester(request).user_id, requester(request).device_id
    else:
        user_id, found = await _password_reset_auth(hs, body)
        keep_device = None
    await hs.auth.users.set_password_hash(
        user_id, hash_password(new_password, hs.config.bcrypt_rounds, hs.config.password_pepper))
    if body.get("logout_devices", True):
        # Every other device is logged out; this one keeps its session.
        devices = [d.device_id for d in await hs.auth.devices.list_devices(user_id) if d.device_id != keep_device]
        await hs.auth.devices.delete_devices(user_id, devices)
    if keep_device is None:
        await hs.threepids.consume(found)
    return json_response({})


async def _password_reset_auth(hs: HomeServer, body: dict[str, Any]):
    """The account whose address the ``m.login.email.identity`` stage proved."""
    session_id = await hs.uia.authenticate("POST /account/password (reset)", body, [["m.login.email.identity"]])
    found = await hs.threepids.address_of_uia(session_id)
    user_id = await hs.threepids.user_of(found.medium, found.address) if found else None
    if user_id is None:
        raise MatrixError(400, Codes.THREEPID_NOT_FOUND, "No account has this e-mail address any more")
    return user_id, found


@routes.post("/{ver:(r0|v3)}/account/deactivate")
async def deactivate(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request, allow_empty=True)
    await require_reauth(request, body, "POST /account/deactivate")
    user_id, id_server = requester(request).user_id, body.get("id_server")
    if id_server is not None:
        check_id_server(id_server)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError.invalid_param("'erase' must be a boolean")
    addresses = await hs.threepids.list(user_id)
    await hs.auth.deactivate_account(user_id, erase=erase)
    # Spec: unbind from the identity server named, or from those we bound the addresses at.
    return json_response({"id_server_unbind_result": await hs.threepids.unbind_all(user_id, id_server, addresses)})


def _device_json(d) -> dict[str, Any]:
    out: dict[str, Any] = {"device_id": d.device_id, "display_name": d.display_name}
    if d.last_seen_ts is not None:
        out["last_seen_ts"] = d.last_seen_ts
    if d.last_seen_ip is not None:
        out["last_seen_ip"] = d.last_seen_ip
    return out


@routes.get("/{ver:(r0|v3)}/devices")
@guest_allowed
async def list_devices(request: web.Request) -> web.Response:
    hs = request.app[HS]
    devices = await hs.auth.devices.list_devices(requester(request).user_id)
    return json_response({"devices": [_device_json(d) for d in devices]})


@routes.get("/{ver:(r0|v3)}/devices/{device_id}")
@guest_allowed
async def get_device(request: web.Request) -> web.Response:
    hs = request.app[HS]
    d = await hs.auth.devices.get_device(requester(request).user_id, request.match_info["device_id"])
    if d is None:
        raise MatrixError.not_found("Device not found")
    return json_response(_device_json(d))


@routes.put("/{ver:(r0|v3)}/devices/{device_id}")
@guest_allowed
async def update_device(request: web.Request) -> web.Response:
    """Renames a device; an application service also creates its users' devices this way
    (201). https://spec.matrix.org/latest/application-service-api/#device-management"""
    hs = request.app[HS]
    body = await read_json_body(request)
    name = body.get("display_name")
    if name is not None and (not isinstance(name, str) or len(name) > 100):
        raise MatrixError.invalid_param("display_name must be a string of at most 100 characters")
    req, device_id = requester(request), request.match_info["device_id"]
    if await hs.auth.devices.set_display_name(req.user_id, device_id, name):
        return json_response({})
    if req.app_service_id is None:
        raise MatrixError.not_found("Device not found")
    if not device_id or len(device_id) > 255:
        raise MatrixError.invalid_param("device_id must be a non-empty string of at most 255 characters")
    await hs.auth.devices.upsert_device(req.user_id, device_id, name, hs.clock_ms())
    return json_response({}, status=201)


@routes.delete("/{ver:(r0|v3)}/devices/{device_id}")
async def delete_device(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request, allow_empty=True)
    req = requester(request)
    device_id = request.match_info["device_id"]
    if await hs.auth.devices.get_device(req.user_id, device_id) is None:
        raise MatrixError.not_found("Device not found")
    await require_reauth(request, body, f"DELETE /devices/{device_id}")
    await hs.auth.devices.delete_devices(req.user_id, [device_id])
    return json_response({})


@routes.post("/{ver:(r0|v3)}/delete_devices")
async def delete_devices(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    ids = body.get("devices")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MatrixError.bad_json("'devices' must be a list of device IDs")
    await require_reauth(request, body, "POST /delete_devices")
    await hs.auth.devices.delete_devices(requester(request).user_id, ids)
    return json_response({})


@routes.get("/{ver:(r0|v3)}/capabilities")
async def capabilities(request: web.Request) -> web.Response:
    hs = request.app[HS]
    # m.account_moderation (v1.18): only for those who may lock and suspend, the admins.
    moderation = {"m.account_moderation": {"lock": True, "suspend": True}} if requester(request).is_admin else {}
    profiles = hs.config.profiles
    # m.profile_fields (v1.16) names the fields users may not change, as Synapse does.
    disallowed = [f for f, allowed in (("displayname", profiles.enable_set_displayname),
                                       ("avatar_url", profiles.enable_set_avatar_url)) if not allowed]
    return json_response({
        "capabilities": {
            "m.room_versions": {
                "default": hs.config.default_room_version,
                "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
            },
            # OAuth 2.0 sessions cannot do the UI-auth a password change needs.
            "m.change_password": {"enabled": requester(request).oauth_session_id is None},
            "m.set_displayname": {"enabled": profiles.enable_set_displayname},
            "m.set_avatar_url": {"enabled": profiles.enable_set_avatar_url},
            "m.profile_fields": {"enabled": True, **({"disallowed": disallowed} if disallowed else {})},
            # OAuth 2.0 sessions manage their addresses elsewhere (no UI-auth).
            "m.3pid_changes": {"enabled": hs.config.threepids.enable_3pid_changes and hs.config.email.enabled
                               and requester(request).oauth_session_id is None},
            "m.get_login_token": {"enabled": False},
            **moderation,
        }
    })
