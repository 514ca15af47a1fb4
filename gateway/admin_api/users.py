"""User administration, with Synapse's admin API paths and shapes.

Paths: /_synapse/admin/v2/users, /v2/users/{user_id} (with ``threepids``, ``external_ids`` and
``locked``), /v1/deactivate/{user_id},
/v1/reset_password/{user_id}, /v1/whois/{user_id}, /v1/users/{user_id}/admin,
/v1/users/{user_id}/override_ratelimit, /v1/server_version.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.ids import is_valid_localpart

from .. import __version__
from ..appkeys import HS
from ..http.auth import requester
from ..http import Codes, MatrixError, json_response, read_json_body
from ..passwords import hash_password
from ..server import HomeServer
from ..storage.profiles import ProfileStore
from ..storage.sso import SsoStore
from ..storage.users import UserExistsError

routes = web.RouteTableDef()


def local_user_id(hs: HomeServer, user_id: str) -> str:
    localpart, sep, server = user_id[1:].partition(":") if user_id.startswith("@") else ("", "", "")
    if not sep or server != hs.server_name:
        raise MatrixError(400, Codes.INVALID_PARAM, "Only local users can be managed here")
    return user_id


async def _user_json(hs: HomeServer, user_id: str) -> dict[str, Any]:
    user = await hs.auth.users.get_user(user_id)
    if user is None:
        raise MatrixError.not_found("User not found")
    profile = await ProfileStore(hs.db).get_profile(user_id) or {}
    external_ids = await SsoStore(hs.db).get_external_ids(user_id)
    return {
        "name": user.user_id, "displayname": profile.get("displayname"), "avatar_url": profile.get("avatar_url"),
        "admin": user.admin, "deactivated": user.deactivated, "user_type": user.user_type,
        "creation_ts": user.created_ts, "threepids": await hs.auth.users.get_threepids(user_id),
        "external_ids": [{"auth_provider": p, "external_id": e} for p, e in external_ids], "is_guest": user.is_guest,
        "shadow_banned": user.shadow_banned, "locked": user.locked, "suspended": user.suspended,
        "erased": bool(await hs.auth.users.erased_among([user_id])),
        "appservice_id": None,
    }


def canonical_threepid(medium: Any, address: Any) -> tuple[str, str]:
    """A (medium, address) pair as stored: ``email`` or ``msisdn``, email addresses in lower case."""
    if medium not in ("email", "msisdn") or not isinstance(address, str) or not address.strip():
        raise MatrixError.invalid_param("A third-party ID needs a 'medium' (email or msisdn) and an 'address'")
    address = address.strip()
    return medium, address.lower() if medium == "email" else address


def _threepids(body: dict[str, Any]) -> list[tuple[str, str]] | None:
    raw = body.get("threepids")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise MatrixError.invalid_param("'threepids' must be a list of objects")
    return [canonical_threepid(t.get("medium"), t.get("address")) for t in raw]


def _external_ids(body: dict[str, Any]) -> list[tuple[str, str]] | None:
    raw = body.get("external_ids")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(
            isinstance(e, dict) and isinstance(e.get("auth_provider"), str) and e["auth_provider"]
            and isinstance(e.get("external_id"), str) and e["external_id"] for e in raw):
        raise MatrixError.invalid_param("'external_ids' must be a list of {auth_provider, external_id}")
    return list(dict.fromkeys((e["auth_provider"], e["external_id"]) for e in raw))


def _int_param(request: web.Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError.invalid_param(f"'{name}' must be an integer") from None
    if value < 0:
        raise MatrixError.invalid_param(f"'{name}' must not be negative")
    return min(value, maximum) if maximum else value


def _bool_param(request: web.Request, name: str, default: bool | None) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise MatrixError.invalid_param(f"'{name}' must be true or false")
    return raw == "true"


@routes.get("/v1/server_version")
async def server_version(request: web.Request) -> web.Response:
    return json_response({"server_version": f"Gateway {__version__}"})


@routes.get("/v2/users")
async def list_users(request: web.Request) -> web.Response:
    hs = request.app[HS]
    offset = _int_param(request, "from", 0)
    limit = _int_param(request, "limit", 100, maximum=1000)
    users, total = await hs.auth.users.list_users(
        offset=offset, limit=limit, name=request.query.get("name") or request.query.get("user_id"),
        include_deactivated=bool(_bool_param(request, "deactivated", False)),
        admins=_bool_param(request, "admins", None),
        order_by=request.query.get("order_by", "name"), descending=request.query.get("dir", "f") == "b",
    )
    body: dict[str, Any] = {"users": users, "total": total}
    if offset + len(users) < total:
        body["next_token"] = str(offset + len(users))
    return json_response(body)


@routes.get("/v2/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    hs = request.app[HS]
    return json_response(await _user_json(hs, local_user_id(hs, request.match_info["user_id"])))


@routes.put("/v2/users/{user_id}")
async def put_user(request: web.Request) -> web.Response:
    """Create or modify a user: 201 when created, 200 when changed."""
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    body = await read_json_body(request)
    for key, kind in (("password", str), ("displayname", str), ("avatar_url", str), ("user_type", str),
                      ("admin", bool), ("deactivated", bool), ("logout_devices", bool), ("locked", bool)):
        if body.get(key) is not None and not isinstance(body[key], kind):
            raise MatrixError.invalid_param(f"'{key}' must be a {'string' if kind is str else 'boolean'}")
    threepids, external_ids = _threepids(body), _external_ids(body)
    if external_ids is not None:
        sso = SsoStore(hs.db)
        for provider, external_id in external_ids:
            owner = await sso.get_user_by_external_id(provider, external_id)
            if owner is not None and owner != user_id:
                raise MatrixError(409, Codes.UNKNOWN, f"External ID {provider}/{external_id} is already in use")
    if threepids is not None:
        for medium, address in threepids:
            owner = await hs.auth.users.get_user_by_threepid(medium, address)
            if owner is not None and owner != user_id:
                raise MatrixError(409, Codes.THREEPID_IN_USE, f"{address} is already in use")
    existing = await hs.auth.users.get_user(user_id)
    password = body.get("password")
    created = existing is None
    if created:
        if not is_valid_localpart(user_id[1:].split(":", 1)[0]):
            raise MatrixError(400, Codes.INVALID_USERNAME, "Invalid user ID")
        try:
            await hs.auth.users.create_user(
                user_id,
                password_hash=hash_password(password, hs.config.bcrypt_rounds, hs.config.password_pepper)
                if password else None,
                created_ts=hs.clock_ms(), admin=bool(body.get("admin", False)), user_type=body.get("user_type"),
                displayname=body.get("displayname") or user_id[1:].split(":", 1)[0],
            )
        except UserExistsError:
            created = False
    else:
        if password is not None:
            await hs.auth.users.set_password_hash(
                user_id, hash_password(password, hs.config.bcrypt_rounds, hs.config.password_pepper))
            if body.get("logout_devices", True):
                await hs.auth.devices.delete_devices(user_id)
        if "admin" in body:
            if not body["admin"] and user_id == requester(request).user_id:
                raise MatrixError(400, Codes.UNKNOWN, "You may not demote yourself")
            await hs.auth.users.set_admin(user_id, body["admin"])
        if "user_type" in body:
            await hs.auth.users.set_user_type(user_id, body["user_type"])
        if "displayname" in body:  # also into the user's rooms
            await hs.profiles.update(user_id, "displayname", body["displayname"] or None, by_admin=True)
        if body.get("deactivated") is True and not existing.deactivated:
            await _deactivate(hs, user_id)
        elif body.get("deactivated") is False and existing.deactivated:
            if password is None and existing.password_hash is None:
                raise MatrixError(400, Codes.MISSING_PARAM, "Give a password to reactivate a user")
            await hs.auth.users.set_deactivated(user_id, False)
            await hs.auth.users.set_erased(user_id, False)  # a reactivated user's content is theirs again
            await hs.modules.callbacks.notify("on_user_deactivation_status_changed", user_id, False, True)
    if "avatar_url" in body:
        await hs.profiles.update(user_id, "avatar_url", body["avatar_url"] or None, by_admin=True)
    if isinstance(body.get("locked"), bool):
        await hs.auth.users.set_flag(user_id, "locked", body["locked"])
    if threepids is not None:
        await hs.auth.users.replace_threepids(user_id, threepids, hs.clock_ms())
    if external_ids is not None:
        await SsoStore(hs.db).replace_external_ids(user_id, external_ids)
    return json_response(await _user_json(hs, user_id), status=201 if created else 200)


async def _deactivate(hs: HomeServer, user_id: str, *, erase: bool = False) -> None:
    await hs.auth.deactivate_account(user_id, by_admin=True, erase=erase)


@routes.post("/v1/deactivate/{user_id}")
async def deactivate(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    body = await read_json_body(request, allow_empty=True)
    if body.get("erase") is not None and not isinstance(body["erase"], bool):
        raise MatrixError.invalid_param("'erase' must be a boolean")
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    await _deactivate(hs, user_id, erase=bool(body.get("erase")))
    if body.get("erase"):
        profiles = ProfileStore(hs.db)
        await profiles.set_field(user_id, "displayname", None)
        await profiles.set_field(user_id, "avatar_url", None)
    return json_response({"id_server_unbind_result": "success"})


@routes.post("/v1/reset_password/{user_id}")
async def reset_password(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    body = await read_json_body(request)
    new_password = body.get("new_password")
    if not isinstance(new_password, str) or not new_password:
        raise MatrixError.missing_param("'new_password' is required")
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    await hs.auth.users.set_password_hash(
        user_id, hash_password(new_password, hs.config.bcrypt_rounds, hs.config.password_pepper))
    if body.get("logout_devices", True):
        await hs.auth.devices.delete_devices(user_id)
    return json_response({})


@routes.get("/v1/whois/{user_id}")
async def whois(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    return json_response(await hs.auth.client_ips.whois(user_id))


@routes.get("/v1/users/{user_id}/admin")
async def get_admin(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user = await hs.auth.users.get_user(local_user_id(hs, request.match_info["user_id"]))
    if user is None:
        raise MatrixError.not_found("User not found")
    return json_response({"admin": user.admin})


@routes.put("/v1/users/{user_id}/admin")
async def put_admin(request: web.Request) -> web.Response:
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    body = await read_json_body(request)
    if not isinstance(body.get("admin"), bool):
        raise MatrixError.invalid_param("'admin' must be a boolean")
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    if not body["admin"] and user_id == requester(request).user_id:
        raise MatrixError(400, Codes.UNKNOWN, "You may not demote yourself")
    await hs.auth.users.set_admin(user_id, body["admin"])
    return json_response({})


async def existing_local_user(request: web.Request) -> str:
    hs = request.app[HS]
    user_id = local_user_id(hs, request.match_info["user_id"])
    if await hs.auth.users.get_user(user_id) is None:
        raise MatrixError.not_found("User not found")
    return user_id


@routes.get("/v1/users/{user_id}/override_ratelimit")
async def get_ratelimit_override(request: web.Request) -> web.Response:
    """The user's message rate limit override, or ``{}`` when there is none."""
    user_id = await existing_local_user(request)
    override = await request.app[HS].ratelimit_overrides.store.get(user_id)
    if override is None:
        return json_response({})
    return json_response({"messages_per_second": override[0], "burst_count": override[1]})


@routes.post("/v1/users/{user_id}/override_ratelimit")
async def set_ratelimit_override(request: web.Request) -> web.Response:
    """Override ``rc_message`` for one user (0 and 0: no limit at all)."""
    user_id = await existing_local_user(request)
    body = await read_json_body(request, allow_empty=True)
    values = {}
    for key in ("messages_per_second", "burst_count"):
        value = body.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MatrixError.invalid_param(f"'{key}' must be a non-negative integer")
        values[key] = value
    await request.app[HS].ratelimit_overrides.set(user_id, values["messages_per_second"], values["burst_count"])
    return json_response(values)


@routes.delete("/v1/users/{user_id}/override_ratelimit")
async def delete_ratelimit_override(request: web.Request) -> web.Response:
    user_id = await existing_local_user(request)
    await request.app[HS].ratelimit_overrides.delete(user_id)
    return json_response({})
