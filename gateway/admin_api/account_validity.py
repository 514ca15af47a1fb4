"""Renewing an account's validity: ``POST /_synapse/admin/v1/account_validity/validity``.

Account validity is a module's job in Gateway (``register_account_validity_callbacks``,
docs/modules.md): this path answers what the module's ``on_legacy_admin_request(request)``
returns, ``{"expiration_ts": <its answer>}``, as Synapse does for such a module. Without
one there is nothing to renew: 400.
https://element-hq.github.io/synapse/latest/admin_api/account_validity.html
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..appkeys import HS
from ..http import Codes, MatrixError, json_response
from ..modules.callbacks import ModuleCallbackError

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.post("/v1/account_validity/validity")
async def renew(request: web.Request) -> web.Response:
    modules = request.app[HS].modules.callbacks
    if not modules.has("on_legacy_admin_request"):
        raise MatrixError(400, Codes.UNKNOWN, "Account validity is not enabled on this server (no module"
                                              " handles on_legacy_admin_request)")
    try:
        expiration_ts = await modules.first_answer("on_legacy_admin_request", request)
    except ModuleCallbackError:
        raise MatrixError(502, Codes.UNKNOWN, "The account validity module failed") from None
    if expiration_ts is not None and (not isinstance(expiration_ts, int) or isinstance(expiration_ts, bool)):
        log.warning("on_legacy_admin_request answered %r, not a timestamp", expiration_ts)
        raise MatrixError(502, Codes.UNKNOWN, "The account validity module failed")
    return json_response({"expiration_ts": expiration_ts})
