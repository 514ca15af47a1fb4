"""Client-server endpoints of application services: ping, the third-party network
lookups (answered by asking the services) and services' published room directories.

Spec: https://spec.matrix.org/latest/application-service-api/#client-server-api-extensions
and https://spec.matrix.org/latest/client-server-api/#third-party-networks
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import HS
from ..config.appservice import ApplicationService
from ..http import MatrixError, json_response, read_json_body
from .auth import requester

routes = web.RouteTableDef()


def _calling_service(request: web.Request, error: str) -> ApplicationService:
    """The service whose ``as_token`` made the request; 403 for anyone else."""
    hs = request.app[HS]
    service_id = requester(request).app_service_id
    service = hs.appservices.by_id(service_id) if service_id else None
    if service is None:
        raise MatrixError.forbidden(error)
    return service


@routes.post("/v1/appservice/{appservice_id}/ping")
@routes.post("/unstable/fi.mau.msc2659/appservice/{appservice_id}/ping")
async def ping(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/application-service-api/#post_matrixclientv1appserviceappserviceidping"""
    body = await read_json_body(request, allow_empty=True)
    service = _calling_service(request, "Provided access token is not an application service's as_token")
    if service.id != request.match_info["appservice_id"]:
        raise MatrixError.forbidden("Provided access token is not the appservice's as_token")
    transaction_id = body.get("transaction_id")
    if transaction_id is not None and not isinstance(transaction_id, str):
        raise MatrixError.bad_json("'transaction_id' must be a string")
    duration = await request.app[HS].appservices.ping(service, transaction_id)
    return json_response({"duration_ms": duration})


# --- third-party networks ---------------------------------------------------------------


@routes.get("/{ver:(r0|v3)}/thirdparty/protocols")
async def protocols(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3thirdpartyprotocols"""
    return json_response(await request.app[HS].appservices.protocols())


@routes.get("/{ver:(r0|v3)}/thirdparty/protocol/{protocol}")
async def protocol(request: web.Request) -> web.Response:
    name = request.match_info["protocol"]
    found = (await request.app[HS].appservices.protocols(name)).get(name)
    if found is None:
        raise MatrixError.not_found(f"Unknown protocol {name}")
    return json_response(found)


def _fields(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in request.query.items() if k != "access_token"}


@routes.get("/{ver:(r0|v3)}/thirdparty/{kind:(user|location)}/{protocol}")
async def lookup_in_protocol(request: web.Request) -> web.Response:
    """``/thirdparty/user/{protocol}`` and ``/thirdparty/location/{protocol}``: the services
    that declared the protocol search with the query's fields."""
    hs = request.app[HS]
    name = request.match_info["protocol"]
    if not hs.appservices.known_protocol(name):
        raise MatrixError.not_found(f"Unknown protocol {name}")
    return json_response(await hs.appservices.query_3pe(request.match_info["kind"], name, _fields(request)))


@routes.get("/{ver:(r0|v3)}/thirdparty/{kind:(user|location)}")
async def reverse_lookup(request: web.Request) -> web.Response:
    """``/thirdparty/user?userid=`` and ``/thirdparty/location?alias=``: every service asked."""
    kind = request.match_info["kind"]
    key = "userid" if kind == "user" else "alias"
    value = request.query.get(key)
    if not value:
        raise MatrixError.missing_param(f"'{key}' is required")
    return json_response(await request.app[HS].appservices.query_3pe(kind, None, {key: value}))


# --- services' room directories ----------------------------------------------------------------


@routes.put("/{ver:(r0|v3)}/directory/list/appservice/{network_id}/{room_id}")
@routes.delete("/{ver:(r0|v3)}/directory/list/appservice/{network_id}/{room_id}")
async def set_listed(request: web.Request) -> web.Response:
    """Spec: https://spec.matrix.org/latest/application-service-api/#put_matrixclientv3directorylistappservicenetworkidroomid
    (``DELETE`` as Synapse: takes the room out)."""
    hs = request.app[HS]
    service = _calling_service(request, "Only application services may publish rooms in their networks' lists")
    room_id = request.match_info["room_id"]
    await hs.events.get_room(room_id)
    if request.method == "DELETE":
        visibility = "private"
    else:
        visibility = (await read_json_body(request)).get("visibility")
    await hs.appservices.set_room_listed(service, request.match_info["network_id"], room_id, visibility)
    return json_response({})
