"""E-mail addresses on accounts: ``requestToken``, ``/account/3pid`` and friends.

Spec: https://spec.matrix.org/latest/client-server-api/#adding-account-administrative-contact-information,
``/register/email/requestToken`` and ``/account/password/email/requestToken``. Phone numbers
(``msisdn``) answer 400 ``M_THREEPID_MEDIUM_NOT_SUPPORTED``: we send no SMS.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import HS, THREEPIDS
from ..http import Codes, MatrixError, json_response, read_json_body
from .account import require_reauth
from .auth import public, requester

routes = web.RouteTableDef()

_PURPOSE_OF_PATH = {"register": "registration", "account/3pid": "add_threepid", "account/password": "password_reset"}


@routes.post("/{ver:(r0|v3)}/{what:(register|account/3pid|account/password)}/email/requestToken")
@public
async def email_request_token(request: web.Request) -> web.Response:
    """A validation mail for registration, adding an address, or a password reset."""
    hs = request.app[HS]
    purpose = _PURPOSE_OF_PATH[request.match_info["what"]]
    if purpose == "registration" and not hs.config.enable_registration:
        raise MatrixError.forbidden("Registration has been disabled")
    if purpose == "add_threepid" and not hs.config.threepids.enable_3pid_changes:
        raise MatrixError(400, Codes.FORBIDDEN, "Changing e-mail addresses is disabled on this server")
    body = await read_json_body(request)
    return json_response(await request.config_dict[THREEPIDS].request_email_token(purpose, body, request.remote or ""))


@routes.post("/{ver:(r0|v3)}/{what:(register|account/3pid|account/password)}/msisdn/requestToken")
@public
async def msisdn_request_token(request: web.Request) -> web.Response:
    await read_json_body(request)
    raise MatrixError(400, Codes.THREEPID_MEDIUM_NOT_SUPPORTED, "Phone numbers are not supported on this server")


@routes.get("/{ver:(r0|v3)}/account/3pid")
async def get_threepids(request: web.Request) -> web.Response:
    return json_response({"threepids": await request.config_dict[THREEPIDS].list(requester(request).user_id)})


def _check_changes_allowed(request: web.Request) -> None:
    if not request.app[HS].config.threepids.enable_3pid_changes:
        raise MatrixError(400, Codes.FORBIDDEN, "Changing e-mail addresses is disabled on this server")


@routes.post("/{ver:(r0|v3)}/account/3pid/add")
async def add_threepid(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3account3pidadd
    (user-interactive auth; OAuth 2.0 sessions are sent to the account page)."""
    _check_changes_allowed(request)
    body = await read_json_body(request)
    creds = {"sid": body.get("sid"), "client_secret": body.get("client_secret")}
    if not isinstance(creds["sid"], str) or not isinstance(creds["client_secret"], str):
        raise MatrixError.missing_param("'sid' and 'client_secret' are required")
    threepids = request.config_dict[THREEPIDS]
    found = await threepids.validated(creds, "add_threepid")  # before any auth stage is spent
    await require_reauth(request, body, "POST /account/3pid/add")
    await threepids.add(requester(request).user_id, found.medium, found.address, found.validated_at)
    await threepids.consume(found)
    return json_response({})


@routes.post("/{ver:(r0|v3)}/account/3pid")
async def post_threepid(request: web.Request) -> web.Response:
    """The deprecated form of ``/3pid/add``: ``three_pid_creds`` of a session we validated."""
    _check_changes_allowed(request)
    body = await read_json_body(request)
    creds = body.get("three_pid_creds", body.get("threePidCreds"))
    if requester(request).oauth_session_id is not None:
        await require_reauth(request, body, "POST /account/3pid/add")  # the account page, as for /3pid/add
    threepids = request.config_dict[THREEPIDS]
    found = await threepids.validated(creds, "add_threepid")
    await threepids.add(requester(request).user_id, found.medium, found.address, found.validated_at)
    await threepids.consume(found)
    return json_response({})


def _medium_and_address(body: dict[str, Any]) -> tuple[str, str]:
    medium, address = body.get("medium"), body.get("address")
    if not isinstance(medium, str) or not isinstance(address, str):
        raise MatrixError.missing_param("'medium' and 'address' are required strings")
    if medium == "email":
        address = address.strip().lower()
    return medium, address


@routes.post("/{ver:(r0|v3)}/account/3pid/delete")
async def delete_threepid(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3account3piddelete"""
    _check_changes_allowed(request)
    body = await read_json_body(request)
    medium, address = _medium_and_address(body)
    result = await request.config_dict[THREEPIDS].delete(requester(request).user_id, medium, address,
                                                         body.get("id_server"))
    return json_response({"id_server_unbind_result": result})


@routes.post("/{ver:(r0|v3|unstable)}/account/3pid/bind")
async def bind_threepid(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3account3pidbind"""
    body = await read_json_body(request)
    await request.config_dict[THREEPIDS].bind(requester(request).user_id, body)
    return json_response({})


@routes.post("/{ver:(r0|v3|unstable)}/account/3pid/unbind")
async def unbind_threepid(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#post_matrixclientv3account3pidunbind"""
    body = await read_json_body(request)
    medium, address = _medium_and_address(body)
    result = await request.config_dict[THREEPIDS].unbind(requester(request).user_id, medium, address,
                                                         body.get("id_server"))
    return json_response({"id_server_unbind_result": result})
