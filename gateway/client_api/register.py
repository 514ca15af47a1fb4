"""Account registration.

Spec: https://spec.matrix.org/latest/client-server-api/#account-registration
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response, read_json_body
from ..modules import RegistrationBehaviour
from ..passwords import hash_password
from ..server import HomeServer
from ..storage.users import UserExistsError
from .auth import calling_appservice, get_access_token, public
from .login import refresh_token_param

routes = web.RouteTableDef()

REGISTER = "POST /register"
#: What a registration session remembers of its first request (and the password's hash).
REMEMBERED_PARAMS = ("username", "device_id", "initial_device_display_name", "inhibit_login")
#: How long a registration may be retried with its completed session.
REGISTRATION_RETRY_MS = 10 * 60 * 1000


def registration_flows(hs: HomeServer) -> list[list[str]]:
    """As Synapse: a registration token when required, else the dummy stage; an e-mail address
    instead when ``registrations_require_3pid`` says so, or as another flow when we send mail;
    the terms after each."""
    token = ["m.login.registration_token"] if hs.config.registration_requires_token else []
    if "email" in hs.config.threepids.registrations_require_3pid:
        flows = [token + ["m.login.email.identity"]]
    else:
        flows = [token or ["m.login.dummy"]]
        if hs.config.email.enabled:
            flows.append(token + ["m.login.email.identity"])
    if hs.config.captcha.enable_registration_captcha:
        flows = [["m.login.recaptcha"] + flow for flow in flows]
    if _consent_version(hs) is not None:
        flows = [flow + ["m.login.terms"] for flow in flows]
    return flows


def _consent_version(hs: HomeServer) -> str | None:
    consent = hs.config.user_consent
    return consent.version if consent is not None and consent.require_at_registration else None


def registration_params(hs: HomeServer) -> dict:
    """The captcha's public key and the ``m.login.terms`` policies (spec: "Google
    ReCaptcha", "Terms of service at registration")."""
    params: dict = {}
    if hs.config.captcha.configured:
        params["m.login.recaptcha"] = {"public_key": hs.config.captcha.public_key}
    version = _consent_version(hs)
    if version is None:
        return params
    policy = {"version": version, "en": {
        "name": hs.config.user_consent.policy_name,
        "url": f"{hs.config.public_baseurl}_matrix/consent?v={version}",
    }}
    params["m.login.terms"] = {"policies": {"privacy_policy": policy}}
    return params


async def _accept_terms(auth: dict, user_id: str | None) -> None:
    """``m.login.terms``: the client sends it once the user accepted the policies it was shown."""
    return None


async def _check_registration_token(hs: HomeServer, auth: dict, user_id: str | None) -> None:
    token = auth.get("token")
    if not isinstance(token, str) or not await hs.auth.store.registration_token_valid(token, hs.clock_ms()):
        raise MatrixError(401, Codes.UNAUTHORIZED, "Invalid registration token")


@routes.get("/{ver:(r0|v3)}/register/available")
@public
async def get_available(request: web.Request) -> web.Response:
    hs = request.app[HS]
    hs.ratelimiters["rc_registration"].ratelimit(request.remote or "")
    if not hs.config.enable_registration:  # as Synapse (admins ask /_synapse/admin/v1/username_available)
        raise MatrixError.forbidden("Registration has been disabled")
    username = request.query.get("username")
    if username is None:
        raise MatrixError.missing_param("'username' is required")
    await hs.usernames.check(username)
    return json_response({"available": True})


@routes.get("/v1/register/m.login.registration_token/validity")
@routes.get("/unstable/org.matrix.msc3231/register/org.matrix.msc3231.login.registration_token/validity")
@public
async def registration_token_validity(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity
    (rate limited per address by ``rc_registration_token_validity``: tokens must not be guessable)."""
    hs = request.app[HS]
    hs.ratelimiters["rc_registration_token_validity"].ratelimit(request.remote or "")
    if not hs.config.enable_registration:
        raise MatrixError.forbidden("Registration has been disabled")
    token = request.query.get("token")
    if token is None:
        raise MatrixError.missing_param("'token' is required")
    return json_response({"valid": await hs.auth.store.registration_token_valid(token, hs.clock_ms())})


@routes.post("/{ver:(r0|v3)}/register")
@public
async def post_register(request: web.Request) -> web.Response:
    hs = request.app[HS]
    body = await read_json_body(request)
    kind = request.query.get("kind", "user")
    if kind == "guest":
        return json_response(await _register_guest(hs, request, body))
    if kind != "user":
        raise MatrixError.invalid_param(f"Unknown kind {kind!r}")
    if body.get("type") == "m.login.application_service" or _appservice_token(hs, request) is not None:
        return json_response(await _register_for_appservice(hs, request, body))
    if not hs.config.enable_registration:
        raise MatrixError.forbidden("Registration has been disabled")

    # A session remembers its first request's parameters (the client may leave them out
    # when it completes the stages) and the user it registered (a retry gets that user
    # again, with a new login, instead of an error).
    session = await hs.uia.get_session(body, REGISTER)
    remembered = session.data if session is not None else {}
    if remembered.get("registered_user_id"):
        return json_response(await _register_again(hs, session, body))
    body = {**remembered.get("params", {}), **body}
    username = body.get("username")
    password = body.get("password")
    refresh_token_param(body)  # checked before any auth stage is spent
    if password is not None and (not isinstance(password, str) or len(password) > 512):
        raise MatrixError.invalid_param("'password' must be a string of at most 512 characters")
    upgraded_guest = None
    if username is not None:
        if not isinstance(username, str):
            raise MatrixError(400, Codes.INVALID_USERNAME, "'username' must be a string")
        username = username.lower()
        # Fail early, before any auth stage is spent.
        if "guest_access_token" in body:
            upgraded_guest = await hs.guest_access.check_upgrade(body["guest_access_token"], username)
        else:
            await hs.usernames.check(username)
    elif "guest_access_token" in body:
        raise MatrixError.missing_param("'username' (the guest's localpart) is required to upgrade a guest")

    if "m.login.registration_token" not in hs.uia.checkers:
        hs.uia.register_stage(
            "m.login.registration_token", lambda auth, uid: _check_registration_token(hs, auth, uid)
        )
    if "m.login.terms" not in hs.uia.checkers:
        hs.uia.register_stage("m.login.terms", _accept_terms)
    if hs.config.captcha.configured and "m.login.recaptcha" not in hs.uia.checkers:
        hs.uia.register_stage("m.login.recaptcha", lambda auth, uid: hs.recaptcha.check(auth.get("response")))

    async def remember() -> dict:
        data: dict = {"params": {k: body[k] for k in REMEMBERED_PARAMS if k in body}}
        if isinstance(password, str):
            data["password_hash"] = await asyncio.to_thread(hash_password, password, hs.config.bcrypt_rounds,
                                                            hs.config.password_pepper)
        return data

    session_id, completed = await hs.uia.authenticate_stages(
        REGISTER, body, registration_flows(hs), params=registration_params(hs), remember=remember, keep=True,
        # A configured captcha may be solved even where not required, as with Synapse.
        optional=frozenset({"m.login.recaptcha"} if hs.config.captcha.configured else ()))
    hs.ratelimiters["rc_registration"].ratelimit(request.remote or "")

    modules = hs.modules.callbacks
    uia_results = _uia_results(completed, body)
    module_username = await modules.first_not_none("get_username_for_registration", uia_results, dict(body))
    if isinstance(module_username, str):
        username = module_username.lower()
    displayname = await modules.first_not_none("get_displayname_for_registration", uia_results, dict(body))
    behaviour = await modules.registration_behaviour(
        None, username, [(request.headers.get("User-Agent", ""), request.remote or "")], None)
    if behaviour is RegistrationBehaviour.DENY:
        raise MatrixError.forbidden("Registration has been refused by the server's policy")

    email = await hs.threepids.address_of_uia(session_id) if "m.login.email.identity" in completed else None
    if email is not None and await hs.threepids.user_of(email.medium, email.address) is not None:
        raise MatrixError(400, Codes.THREEPID_IN_USE, "This e-mail address is already in use")
    if password:
        password_hash = await asyncio.to_thread(hash_password, password, hs.config.bcrypt_rounds,
                                                hs.config.password_pepper)
    else:
        password_hash = remembered.get("password_hash")
    if upgraded_guest is not None:
        # The guest's account becomes a full one: same user ID, rooms and devices.
        user_id = upgraded_guest
        if not await hs.auth.users.upgrade_guest(user_id, password_hash):
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken")
    else:
        if username is None:
            username = await _generate_localpart(hs)
        user_id = await hs.usernames.check(username)
        try:
            await hs.auth.users.create_user(
                user_id,
                password_hash=password_hash,
                created_ts=hs.clock_ms(),
                displayname=displayname if isinstance(displayname, str) else username,
            )
        except UserExistsError:
            raise MatrixError(400, Codes.USER_IN_USE, "User ID already taken") from None
    if behaviour is RegistrationBehaviour.SHADOW_BAN:  # as Synapse: the account works, its events go nowhere
        await hs.auth.users.set_flag(user_id, "shadow_banned", True)
    if "m.login.terms" in completed:
        await hs.auth.users.set_consent_version(user_id, _consent_version(hs), hs.clock_ms())
    if email is not None:
        await hs.threepids.add(user_id, email.medium, email.address, email.validated_at)
        await hs.threepids.consume(email)
        if hs.email_notifs is not None:
            await hs.email_notifs.add_new_user_pusher(user_id, email.address)
    await modules.notify("on_user_registration", user_id)
    auth = body.get("auth") or {}
    if auth.get("type") == "m.login.registration_token":
        await hs.auth.store.use_registration_token(auth["token"])

    await hs.uia.store.set_uia_session_data(session_id, {**remembered, "registered_user_id": user_id,
                                                         "registered_ts": hs.clock_ms()})
    return json_response(await _logged_in(hs, user_id, body))


async def _logged_in(hs: HomeServer, user_id: str, body: dict) -> dict:
    """The answer to a registration: the user, and a new device and access token unless
    the client asked for none (``inhibit_login``)."""
    if body.get("inhibit_login"):
        return {"user_id": user_id, "home_server": hs.server_name}
    device_id = body.get("device_id")
    if device_id is not None and not isinstance(device_id, str):
        raise MatrixError.invalid_param("device_id must be a string")
    display_name = body.get("initial_device_display_name")
    return await hs.auth.login_session(
        user_id, device_id=device_id, display_name=display_name if isinstance(display_name, str) else None,
        refresh_token=refresh_token_param(body),
    )


async def _register_again(hs: HomeServer, session, body: dict) -> dict:
    """A registration retried with the session that completed it (the client lost the
    answer): the same user, logged in again; for a while only (the session ID is then
    as good as a password)."""
    data = session.data
    if hs.clock_ms() - int(data.get("registered_ts", 0)) > REGISTRATION_RETRY_MS:
        raise MatrixError(400, Codes.UNKNOWN, "This registration is done; log in instead")
    params = {**data.get("params", {}), **body}
    username = params.get("username")
    user_id = data["registered_user_id"]
    if isinstance(username, str) and f"@{username.lower()}:{hs.server_name}" != user_id:
        raise MatrixError(400, Codes.USER_IN_USE, "This registration session registered another user")
    return await _logged_in(hs, user_id, params)


def _appservice_token(hs: HomeServer, request: web.Request) -> str | None:
    """The request's access token if it is an application service's ``as_token``."""
    if not hs.config.appservice.services:
        return None
    token = get_access_token(request)
    return token if token and hs.appservices.by_token(token) is not None else None


async def _register_for_appservice(hs: HomeServer, request: web.Request, body: dict) -> dict:
    """``m.login.application_service``: a user of the service's namespace, no password,
    no auth stages (works with ``enable_registration: false``). With the ``as_token`` the
    type is required. https://spec.matrix.org/latest/application-service-api/#server-admin-style-permissions"""
    service = calling_appservice(request)
    if body.get("type") != "m.login.application_service":
        raise MatrixError.invalid_param("An application service registers users with type m.login.application_service")
    if service.msc4190 and not body.get("inhibit_login"):
        from ..services.appservices import APPSERVICE_LOGIN_UNSUPPORTED

        raise MatrixError(400, APPSERVICE_LOGIN_UNSUPPORTED,
                          "This application service manages devices itself (MSC4190): set inhibit_login")
    if body.get("device_id") is not None and not isinstance(body["device_id"], str):
        raise MatrixError.invalid_param("device_id must be a string")
    refresh_token_param(body)
    user_id = await hs.appservices.register_user(service, body.get("username"))
    hs.appservices.alive(service)
    await hs.modules.callbacks.notify("on_user_registration", user_id)
    return await _logged_in(hs, user_id, body)


async def _register_guest(hs: HomeServer, request: web.Request, body: dict) -> dict:
    """``kind=guest``: no auth stages; ``device_id`` and ``initial_device_display_name``
    as for a user. https://spec.matrix.org/latest/client-server-api/#guest-access"""
    hs.ratelimiters["rc_registration"].ratelimit(request.remote or "")
    device_id = body.get("device_id")
    display_name = body.get("initial_device_display_name")
    if device_id is not None and not isinstance(device_id, str):
        raise MatrixError.invalid_param("device_id must be a string")
    if display_name is not None and not isinstance(display_name, str):
        raise MatrixError.invalid_param("initial_device_display_name must be a string")
    return await hs.guest_access.register_guest(device_id=device_id, display_name=display_name,
                                                refresh_token=refresh_token_param(body))


def _uia_results(completed: tuple[str, ...], body: dict) -> dict:
    """What modules learn of the completed auth stages (Synapse's ``uia_results`` shape)."""
    results: dict = {stage: True for stage in completed}
    auth = body.get("auth") or {}
    if "m.login.registration_token" in results and isinstance(auth.get("token"), str):
        results["m.login.registration_token"] = auth["token"]
    return results


async def _generate_localpart(hs: HomeServer) -> str:
    import secrets

    for _ in range(10):
        candidate = f"u{secrets.randbelow(10**9):09d}"
        if await hs.auth.users.get_user(f"@{candidate}:{hs.server_name}") is None:
            return candidate
    raise MatrixError(500, Codes.UNKNOWN, "Could not allocate a user ID")
