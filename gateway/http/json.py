"""JSON request bodies and responses."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from federation.canonical_json import encode_canonical_json, parse_json

from .errors import Codes, MatrixError

#: The body already parsed (strictly, as below) by a middleware that had to read it,
#: e.g. the X-Matrix check, which signs the content: parsed once per request.
PARSED_BODY = web.RequestKey("parsed_json_body", object)


async def read_json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object.

    ``M_NOT_JSON`` if it is not JSON at all, ``M_BAD_JSON`` if it is JSON but not an
    object, ``M_TOO_LARGE`` (via aiohttp's size limit) if it is too big.
    """
    if PARSED_BODY in request:
        body = request[PARSED_BODY]
        if not isinstance(body, dict):
            raise MatrixError(400, Codes.BAD_JSON, "The request body must be a JSON object")
        return body
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, Codes.NOT_JSON, "Content not JSON: the request body is empty")
    try:
        body = parse_json(raw)
    except ValueError as e:
        raise MatrixError(400, Codes.NOT_JSON, f"Content not JSON: {e}") from None
    if not isinstance(body, dict):
        raise MatrixError(400, Codes.BAD_JSON, "The request body must be a JSON object")
    return body


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response; UTF-8, compact, sorted keys (canonical, so it can be signed as is)."""
    return web.Response(
        body=encode_canonical_json(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def large_json_response(body: Any, status: int = 200) -> web.Response:
    """A big JSON response (a /sync) with orjson alone, keys sorted: the canonical
    encoder's walk for floats costs more than the encoding. Numbers are written as they
    are (an integral float as ``1.0``, the same JSON number); what orjson refuses (an
    integer beyond 64 bits) goes to ``json_response``."""
    try:
        raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return json_response(body, status)
    return web.Response(body=raw, status=status, content_type="application/json")
