"""X-Matrix authentication of inbound federation requests (a middleware of the
/_matrix/federation sub-app). Spec: server-server API, "Request Authentication".

Handlers marked ``@public`` (e.g. /version) skip it; the others find the authenticated
origin server in ``request[ORIGIN]``.
"""

from __future__ import annotations


from aiohttp import web

from federation.signing import SignatureError, parse_x_matrix_authorization, verify_request
from federation.canonical_json import parse_json

from ..appkeys import HS
from ..http.auth import public
from ..http.json import PARSED_BODY
from ..http import Codes, MatrixError

ORIGIN = web.RequestKey("federation_origin", str)

__all__ = ["ORIGIN", "public", "x_matrix_middleware"]


def _unauthorized(message: str) -> MatrixError:
    return MatrixError(401, Codes.UNAUTHORIZED, message)


@web.middleware
async def x_matrix_middleware(request: web.Request, handler) -> web.StreamResponse:
    unmatched = getattr(request.match_info, "http_exception", None) is not None
    if unmatched or getattr(handler, "gateway_public", False):
        return await handler(request)
    hs = request.app[HS]
    headers = request.headers.getall("Authorization", [])
    if not headers:
        raise _unauthorized("Missing X-Matrix Authorization header")
    content = None
    if request.can_read_body:
        raw = await request.read()
        if raw:
            try:  # strict JSON (what a handler reads) parsed once for both
                content = parse_json(raw)
                request[PARSED_BODY] = content
            except ValueError:
                try:  # NaN and the like: still checked as signed, the handler refuses them
                    content = parse_json(raw, allow_constants=True)
                except ValueError:
                    raise MatrixError(400, Codes.NOT_JSON, "Content not JSON") from None
    last_error = "no valid signature"
    malformed = 0
    for header in headers:
        try:
            auth = parse_x_matrix_authorization(header)
        except SignatureError as e:
            last_error = str(e)
            malformed += 1
            continue
        if auth.destination is not None and auth.destination != hs.server_name:
            raise _unauthorized(f"Request is for {auth.destination}, not {hs.server_name}")
        whitelist = hs.config.federation.federation_domain_whitelist
        if whitelist is not None and auth.origin not in whitelist:
            raise MatrixError(403, Codes.FORBIDDEN, "Federation with this server is not allowed")
        # A request must be signed with a key that is valid now (old keys do not count).
        verify_key = await hs.keyring.get_verify_key(auth.origin, auth.key_id, minimum_valid_until_ts=hs.clock_ms())
        if verify_key is None:
            last_error = f"cannot get key {auth.key_id} of {auth.origin}"
            continue
        try:
            verify_request(auth, request.method, request.raw_path, content, hs.server_name, verify_key)
        except SignatureError as e:
            last_error = str(e)
            continue
        request[ORIGIN] = auth.origin
        hs.keyring.reset_backoff(auth.origin)  # it is up: its keys may be fetched again
        hs.federation_sender.on_inbound_request(auth.origin)  # and what it missed can go now
        return await handler(request)
    if malformed == len(headers):
        # Not a header one could check (e.g. an origin that is no server name): a bad
        # request, as Synapse answers, rather than a failed signature.
        raise MatrixError(400, Codes.UNAUTHORIZED, f"Malformed X-Matrix Authorization header: {last_error}")
    raise _unauthorized(f"Invalid X-Matrix signature: {last_error}")
