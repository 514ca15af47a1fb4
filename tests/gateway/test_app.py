"""The HTTP skeleton: key server, version, well-known, CORS, Matrix errors everywhere."""

from __future__ import annotations

import json

import pytest
import signedjson.key
import signedjson.sign
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_listener_app
from gateway.config import parse_config
from gateway.http import MatrixError, json_response, read_json_body
from gateway.http.middleware import error_middleware
from gateway.server import HomeServer

OLD_KEY = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"


@pytest.fixture
async def hs(tmp_path):
    config = parse_config(
        {
            "server_name": "gw.test",
            "public_baseurl": "https://matrix.gw.test/",
            "serve_server_wellknown": True,
            "extra_well_known_client_content": {"org.example.setting": True},
            "old_signing_keys": {"ed25519:old": {"key": OLD_KEY, "expired_ts": 1234}},
            "listeners": [
                {"port": 1, "resources": [{"names": ["client", "federation"]}]},
                {"port": 2, "type": "metrics"},
            ],
            "max_request_body_size": 2048,
        },
        config_path=str(tmp_path / "homeserver.yaml"),
    )
    server = await HomeServer.open(config)
    yield server
    await server.close()


@pytest.fixture
async def client(hs):
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[0]))) as c:
        yield c


async def test_server_keys_verify_with_signedjson(client, hs):
    resp = await client.get("/_matrix/key/v2/server")
    assert resp.status == 200
    body = await resp.json()
    assert body["server_name"] == "gw.test"
    (key_id, entry), = body["verify_keys"].items()
    assert key_id == hs.signing_key.key_id
    verify_key = signedjson.key.decode_verify_key_base64("ed25519", key_id.split(":", 1)[1], entry["key"])
    signedjson.sign.verify_signed_json(body, "gw.test", verify_key)  # raises if wrong
    assert body["old_verify_keys"] == {"ed25519:old": {"key": OLD_KEY, "expired_ts": 1234}}
    assert body["valid_until_ts"] > hs.clock_ms() + 86_400_000 - 60_000
    # A tampered document must not verify: the check above could fail.
    body["valid_until_ts"] += 1
    with pytest.raises(signedjson.sign.SignatureVerifyException):
        signedjson.sign.verify_signed_json(body, "gw.test", verify_key)


async def test_deprecated_key_id_path(client):
    resp = await client.get("/_matrix/key/v2/server/ed25519:whatever")
    assert resp.status == 200
    assert "verify_keys" in await resp.json()


async def test_federation_version(client):
    resp = await client.get("/_matrix/federation/v1/version")
    assert (await resp.json())["server"]["name"] == "Gateway"


async def test_wellknown(client):
    resp = await client.get("/.well-known/matrix/server")
    assert await resp.json() == {"m.server": "matrix.gw.test:443"}
    resp = await client.get("/.well-known/matrix/client")
    assert await resp.json() == {
        "m.homeserver": {"base_url": "https://matrix.gw.test/"},
        "org.example.setting": True,
    }
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_on_client_endpoints(client):
    resp = await client.get("/_matrix/client/versions")
    assert resp.status == 200
    assert "v1.11" in (await resp.json())["versions"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    pre = await client.options("/_matrix/client/v3/sync", headers={"Origin": "https://app.example"})
    assert pre.status == 204
    assert "PUT" in pre.headers["Access-Control-Allow-Methods"]


async def test_cors_on_error_answers(client):
    """Errors too: a browser hides an answer without these headers (Element's 'Unable to set up keys')."""
    for method, path, status in [("GET", "/_matrix/client/v3/no/such/thing", 404),
                                 ("GET", "/_matrix/client/v3/room_keys/version", 401),
                                 ("POST", "/_matrix/client/v3/login", 400),
                                 ("POST", "/_matrix/client/versions", 405),
                                 ("GET", "/_synapse/admin/v1/users/@x:gw.test/admin", 401)]:
        resp = await client.request(method, path, data=b"{")
        assert resp.status == status, path
        assert resp.headers["Access-Control-Allow-Origin"] == "*", path
        assert "Authorization" in resp.headers["Access-Control-Allow-Headers"], path
    # Not on pages outside the Matrix APIs.
    resp = await client.get("/nothing/here")
    assert resp.status == 404 and "Access-Control-Allow-Origin" not in resp.headers


async def test_unknown_paths_and_methods(client):
    for path in ("/_matrix/client/v3/nonexistent", "/_matrix/federation/v1/nope", "/nothing/here"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"
    resp = await client.post("/_matrix/client/versions", data=b"{}")
    assert resp.status == 405
    assert (await resp.json())["errcode"] == "M_UNRECOGNIZED"


async def test_health_and_metrics(hs, client):
    resp = await client.get("/health")
    assert resp.status == 200 and await resp.text() == "OK"
    async with TestClient(TestServer(build_listener_app(hs, hs.config.listeners[1]))) as mc:
        assert (await mc.get("/no/such/page")).status == 404
        text = await (await mc.get("/_synapse/metrics")).text()
        assert "gateway_http_requests_total" in text
        # Errors are counted with the status the client got, under the route pattern.
        assert 'listener="2",method="GET",route="unmatched"' in text and 'code="404"' in text
        # The metrics listener serves nothing else.
        assert (await mc.get("/_matrix/client/versions")).status == 404


def _json_echo_app(max_size: int = 1024) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await read_json_body(request)
        if "fail" in body:
            raise MatrixError.forbidden("you may not")
        if "crash" in body:
            raise RuntimeError("secret internal detail")
        return json_response(body)

    app = web.Application(middlewares=[error_middleware], client_max_size=max_size)
    app.router.add_post("/echo", echo)
    return app


@pytest.mark.parametrize(
    "payload, status, errcode",
    [
        (b"{not json", 400, "M_NOT_JSON"),
        (b"", 400, "M_NOT_JSON"),
        (b"\xff\xfe", 400, "M_NOT_JSON"),
        (b'{"a": NaN}', 400, "M_NOT_JSON"),
        (b"[1, 2]", 400, "M_BAD_JSON"),
        (b'"text"', 400, "M_BAD_JSON"),
        (b'{"fail": 1}', 403, "M_FORBIDDEN"),
        (b'{"pad": "' + b"x" * 4096 + b'"}', 413, "M_TOO_LARGE"),
        (b'{"crash": 1}', 500, "M_UNKNOWN"),
    ],
)
async def test_json_errors(payload, status, errcode):
    async with TestClient(TestServer(_json_echo_app())) as c:
        resp = await c.post("/echo", data=payload, headers={"Content-Type": "application/json"})
        assert resp.status == status
        body = await resp.json()
        assert body["errcode"] == errcode
        assert "secret internal detail" not in json.dumps(body)
        assert "Traceback" not in json.dumps(body)


async def test_body_limit_from_config(client):
    # max_request_body_size: 2048 in the fixture's config applies to real routes too.
    resp = await client.put("/_matrix/client/v3/anything", data=b"x" * 4096)
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
