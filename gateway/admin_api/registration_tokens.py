"""Registration tokens (for the ``m.login.registration_token`` stage), with Synapse's
admin API paths: /_synapse/admin/v1/registration_tokens[/new|/{token}]."""

from __future__ import annotations

import re
import secrets
import string
from typing import Any

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..storage.database import IntegrityError

routes = web.RouteTableDef()

_TOKEN = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise MatrixError.invalid_param(f"'{key}' must be a non-negative integer or null")
    return value


async def _get(request: web.Request, token: str) -> dict[str, Any]:
    for entry in await request.app[HS].auth.store.list_registration_tokens():
        if entry["token"] == token:
            return entry
    raise MatrixError.not_found(f"No such registration token: {token}")


@routes.get("/v1/registration_tokens")
async def list_tokens(request: web.Request) -> web.Response:
    hs = request.app[HS]
    tokens = await hs.auth.store.list_registration_tokens()
    valid = request.query.get("valid")
    if valid in ("true", "false"):
        now = hs.clock_ms()

        def is_valid(t: dict[str, Any]) -> bool:
            fresh = t["expiry_time"] is None or t["expiry_time"] > now
            left = t["uses_allowed"] is None or t["pending"] + t["completed"] < t["uses_allowed"]
            return fresh and left

        tokens = [t for t in tokens if is_valid(t) == (valid == "true")]
    return json_response({"registration_tokens": tokens})


@routes.post("/v1/registration_tokens/new")
async def new_token(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request, allow_empty=True)
    uses_allowed = _optional_int(body, "uses_allowed")
    expiry_time = _optional_int(body, "expiry_time")
    if expiry_time is not None and expiry_time < hs.clock_ms():
        raise MatrixError.invalid_param("'expiry_time' must not be in the past")
    token = body.get("token")
    if token is None:
        length = body.get("length", 16)
        if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= 64:
            raise MatrixError.invalid_param("'length' must be an integer from 1 to 64")
        alphabet = string.ascii_letters + string.digits + "._~-"
        token = "".join(secrets.choice(alphabet) for _ in range(length))
    elif not isinstance(token, str) or not _TOKEN.match(token):
        raise MatrixError.invalid_param("'token' must be 1-64 characters from A-Z, a-z, 0-9 and ._~-")
    try:
        await hs.auth.store.create_registration_token(token, uses_allowed, expiry_time)
    except IntegrityError:
        raise MatrixError.invalid_param(f"Token already exists: {token}") from None
    return json_response(await _get(request, token))


@routes.get("/v1/registration_tokens/{token}")
async def get_token(request: web.Request) -> web.Response:
    return json_response(await _get(request, request.match_info["token"]))


@routes.put("/v1/registration_tokens/{token}")
async def update_token(request: web.Request) -> web.Response:
    hs = request.app[HS]
    token = request.match_info["token"]
    body = await read_json_body(request, allow_empty=True)
    changes = {k: _optional_int(body, k) for k in ("uses_allowed", "expiry_time") if k in body}
    if not await hs.auth.store.update_registration_token(token, changes):
        raise MatrixError.not_found(f"No such registration token: {token}")
    return json_response(await _get(request, token))


@routes.delete("/v1/registration_tokens/{token}")
async def delete_token(request: web.Request) -> web.Response:
    if not await request.app[HS].auth.store.delete_registration_token(request.match_info["token"]):
        raise MatrixError.not_found(f"No such registration token: {request.match_info['token']}")
    return json_response({})
