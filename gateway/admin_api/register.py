"""Shared-secret registration: ``/_synapse/admin/v1/register``.

Same protocol as Synapse's (documented in its admin API): GET returns a nonce; POST
carries an HMAC-SHA1, keyed with ``registration_shared_secret``, over
``nonce NUL username NUL password NUL admin|notadmin [NUL user_type]``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from aiohttp import web

from ..appkeys import HS
from ..http import MatrixError, json_response, read_json_body
from ..passwords import hash_password
from ..storage.users import UserExistsError
from ..http.auth import public

routes = web.RouteTableDef()

NONCE_LIFETIME_S = 60.0
# Nonces are single-use and short-lived; losing them on restart only means asking again.
_nonces: dict[str, float] = {}


def _expected_mac(secret: str, nonce: str, username: str, password: str, admin: bool,
                  user_type: str | None) -> str:
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    parts = [nonce, username, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    mac.update(b"\x00".join(p.encode("utf-8") for p in parts))
    return mac.hexdigest()


@routes.get("/v1/register")
@public
async def get_nonce(request: web.Request) -> web.Response:
    if not request.app[HS].config.registration_shared_secret:
        raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
    now = time.monotonic()
    for n, t in list(_nonces.items()):
        if now - t > NONCE_LIFETIME_S:
            del _nonces[n]
    nonce = secrets.token_hex(32)
    _nonces[nonce] = now
    return json_response({"nonce": nonce})


@routes.post("/v1/register")
@public
async def post_register(request: web.Request) -> web.Response:
    hs = request.app[HS]
    secret = hs.config.registration_shared_secret
    if not secret:
        raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
    body = await read_json_body(request)
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or nonce not in _nonces:
        raise MatrixError(400, "M_UNKNOWN", "Unrecognised nonce")
    started = _nonces.pop(nonce)  # single use, even if the rest fails
    if time.monotonic() - started > NONCE_LIFETIME_S:
        raise MatrixError(400, "M_UNKNOWN", "Nonce has expired")
    username, password = body.get("username"), body.get("password")
    admin, user_type, mac = body.get("admin", False), body.get("user_type"), body.get("mac")
    if not isinstance(username, str) or not username or "\x00" in username:
        raise MatrixError.invalid_param("Invalid username")
    if not isinstance(password, str) or not password or "\x00" in password:
        raise MatrixError.invalid_param("Invalid password")
    if not isinstance(admin, bool) or not isinstance(mac, str) or (user_type is not None and not isinstance(user_type, str)):
        raise MatrixError.invalid_param("Invalid admin, user_type or mac")
    # Bytes, not str: compare_digest raises TypeError on a non-ASCII str (a wrong MAC all the same).
    expected = _expected_mac(secret, nonce, username, password, admin, user_type)
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        raise MatrixError.forbidden("HMAC incorrect")
    user_id = await hs.usernames.check(username.lower())
    try:
        await hs.auth.users.create_user(
            user_id, password_hash=hash_password(password, hs.config.bcrypt_rounds, hs.config.password_pepper),
            created_ts=hs.clock_ms(),
            admin=admin, user_type=user_type, displayname=body.get("displayname") or username,
        )
    except UserExistsError:
        raise MatrixError(400, "M_USER_IN_USE", "User ID already taken") from None
    result = await hs.auth.login_session(user_id)
    return json_response(result)
