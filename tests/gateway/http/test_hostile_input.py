"""Hostile request shapes answer a Matrix error, never a 500 or a logged traceback.

A server with every resource on one plain listener (on each database engine) runs in a
thread of its own, so that
Hypothesis can drive it with plain blocking requests: first the shapes that used to end in
a 500 (deeply nested JSON, non-ASCII MACs), then random bytes and random JSON thrown at
every route the app serves, a bounded number of examples per route.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import logging
import os
import re
import threading
import urllib.parse
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation.net.resolver import DnsResolver
from gateway.__main__ import serve
from gateway.app import build_listener_app, iter_routes
from gateway.config import parse_config
from gateway.server import HomeServer
from tests.conftest import (GENEROUS_RATE_LIMITS, SKIP_POSTGRES, create_postgres_database,
                            drop_postgres_database, free_port)

#: Examples per route in the route sweep (raise it locally: GATEWAY_FUZZ_EXAMPLES=200).
EXAMPLES_PER_ROUTE = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "4"))
FORM_SECRET = "hostile-form-secret"
SHARED_SECRET = "hostile-shared-secret"


@dataclass
class Server:
    port: int
    token: str
    user_id: str
    routes: list[tuple[str, str]]

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                ) -> tuple[int, bytes, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def json(self, method: str, path: str, content, token: str | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = None if content is None else json.dumps(content).encode()
        status, raw, _ = self.request(method, path, body, headers)
        return status, json.loads(raw) if raw else {}


def _routes(config) -> list[tuple[str, str]]:
    """(method, path template) of every route the client listener serves, sub-apps included."""

    async def collect():
        hs = await HomeServer.open(config)
        try:
            app = build_listener_app(hs, config.listeners[0])
            return sorted({(method, res.canonical) for method, res, _ in iter_routes(app)})
        finally:
            await hs.close()

    return asyncio.run(collect())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    """The server, once per database engine (PostgreSQL refuses some text SQLite takes)."""
    if request.param == "postgres" and SKIP_POSTGRES:
        pytest.skip("GATEWAY_TEST_SKIP_POSTGRES=1: no PostgreSQL reachable")
    # Random server names send the notary to a DNS server that is not there: give up fast.
    with pytest.MonkeyPatch.context() as mp:
        original = DnsResolver.__init__
        mp.setattr(DnsResolver, "__init__", lambda self, nameservers=None, **kw: original(
            self, nameservers, **{**kw, "timeout": 0.1}))
        if request.param == "sqlite":
            yield from _server(tmp_path_factory, None)
            return
        name, args = asyncio.run(create_postgres_database())
        try:
            yield from _server(tmp_path_factory, {"name": "psycopg2", "args": {**args, "cp_min": 1, "cp_max": 5}})
        finally:
            asyncio.run(drop_postgres_database(name))


def _server(tmp_path_factory, database: dict | None):
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "policy" / "en").mkdir(parents=True)
    (tmp / "policy" / "en" / "1.0.html").write_text("<p>policy {{ user }}</p>")
    (tmp / "policy" / "en" / "success.html").write_text("<p>thanks</p>")
    port = free_port()
    config = parse_config({
        "server_name": "hostile.test", "public_baseurl": f"http://127.0.0.1:{port}/",
        "listeners": [{"port": port, "bind_addresses": ["127.0.0.1"],
                       "resources": [{"names": ["client", "federation", "media", "keys", "consent"]}]}],
        "database": database or {"name": "sqlite3", "args": {"database": str(tmp / "hs.db")}},
        "signing_key_path": str(tmp / "hs.signing.key"),
        "media_store_path": str(tmp / "media"),
        "enable_registration": True, "enable_registration_without_verification": True,
        "registration_shared_secret": SHARED_SECRET, "bcrypt_rounds": 4,
        "form_secret": FORM_SECRET,
        "user_consent": {"template_dir": str(tmp / "policy"), "version": "1.0"},
        "send_federation": False,
        **GENEROUS_RATE_LIMITS,
    }, config_path=str(tmp / "homeserver.yaml"))
    routes = _routes(config)

    loop = asyncio.new_event_loop()
    stop, started = asyncio.Event(), asyncio.Event()
    failure: list[BaseException] = []

    def run():
        asyncio.set_event_loop(loop)

        async def main():
            task = asyncio.ensure_future(serve(config, stop, started))
            try:
                await task
            except BaseException as e:  # noqa: BLE001 - reported to the test thread
                failure.append(e)
                started.set()

        loop.run_until_complete(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    waiter = threading.Event()
    loop.call_soon_threadsafe(lambda: asyncio.ensure_future(_notify(started, waiter)))
    assert waiter.wait(60), "server did not start"
    if failure:
        raise failure[0]
    srv = Server(port, "", "", routes)
    status, body = srv.json("POST", "/_matrix/client/v3/register",
                            {"username": "alice", "password": "alice-password", "auth": {"type": "m.login.dummy"}})
    assert status == 200, body
    srv.token, srv.user_id = body["access_token"], body["user_id"]
    try:
        yield srv
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


async def _notify(started: asyncio.Event, waiter: threading.Event) -> None:
    await started.wait()
    waiter.set()


def _tracebacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("method, path, auth", [
    ("POST", "/_matrix/client/v3/login", False),
    ("POST", "/_matrix/client/v3/register", False),
    ("POST", "/_matrix/client/v3/createRoom", True),
    ("PUT", "/_matrix/client/v3/user/{user_id}/account_data/m.test", True),
    ("POST", "/_synapse/admin/v1/register", False),
])
def test_deeply_nested_json_is_not_json(server, caplog, kind, method, path, auth):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = f"Bearer {server.token}"
    path = path.replace("{user_id}", urllib.parse.quote(server.user_id))
    status, raw, resp_headers = server.request(method, path, _nested(5000, kind), headers)
    assert status == 400, raw
    assert json.loads(raw)["errcode"] == "M_NOT_JSON"
    assert resp_headers.get("Access-Control-Allow-Origin") == "*"
    assert _tracebacks(caplog) == []


def test_deeply_nested_json_before_the_federation_signature(server, caplog):
    """The body of a signed request is parsed before its signature is checked."""
    status, raw, _ = server.request("PUT", "/_matrix/federation/v1/send/x", _nested(5000, "array"), {
        "Content-Type": "application/json",
        "Authorization": 'X-Matrix origin="other.test",key="ed25519:a",sig="c2ln",destination="hostile.test"',
    })
    assert status == 400, raw
    assert json.loads(raw)["errcode"] == "M_NOT_JSON"
    assert _tracebacks(caplog) == []


@pytest.mark.parametrize("depth", [200, 600, 900])
def test_deep_but_parsable_content_is_stored_or_refused_cleanly(server, caplog, depth):
    """Nesting the parser takes must not fail later (canonical JSON, signing, storage)."""
    content = {"v": json.loads(_nested(depth, "array"))}
    status, room = server.json("POST", "/_matrix/client/v3/createRoom", {}, server.token)
    assert status == 200, room
    room_id = urllib.parse.quote(room["room_id"])
    status, body = server.json("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.test/txn{depth}",
                               content, server.token)
    assert status in (200, 400), body
    if status == 400:
        assert body["errcode"] in ("M_BAD_JSON", "M_NOT_JSON", "M_TOO_LARGE")
    status, body = server.json("PUT", f"/_matrix/client/v3/user/{urllib.parse.quote(server.user_id)}"
                                      f"/account_data/m.deep{depth}", content, server.token)
    assert status in (200, 400), body
    assert _tracebacks(caplog) == []


def test_non_ascii_shared_secret_mac_is_a_wrong_mac(server, caplog):
    status, raw, _ = server.request("GET", "/_synapse/admin/v1/register")
    nonce = json.loads(raw)["nonce"]
    status, body = server.json("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": "mallory", "password": "pw", "mac": "é" * 40})
    assert status == 403, body
    assert body["errcode"] == "M_FORBIDDEN"
    # The right MAC still works, so the 403 above is about the MAC.
    status, raw, _ = server.request("GET", "/_synapse/admin/v1/register")
    nonce = json.loads(raw)["nonce"]
    mac = hmac.new(SHARED_SECRET.encode(), b"\x00".join([nonce.encode(), b"mallory", b"pw", b"notadmin"]),
                   hashlib.sha1).hexdigest()
    status, body = server.json("POST", "/_synapse/admin/v1/register",
                               {"nonce": nonce, "username": "mallory", "password": "pw", "mac": mac})
    assert status == 200, body
    assert _tracebacks(caplog) == []


def test_non_ascii_consent_hmac_is_a_wrong_hmac(server, caplog):
    u = urllib.parse.quote("alice")
    status, raw, _ = server.request("GET", f"/_matrix/consent?v=1.0&u={u}&h={urllib.parse.quote('ü' * 64)}")
    assert status == 403, raw
    good = hmac.new(FORM_SECRET.encode(), b"alice", hashlib.sha256).hexdigest()
    status, raw, _ = server.request("GET", f"/_matrix/consent?v=1.0&u={u}&h={good}")
    assert status == 200, raw
    assert _tracebacks(caplog) == []


# --- random input at every route -------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["auth", "type", "content", "user_id", "room_id", "limit", "filter",
                                     "device_id", "keys", "visibility", "name", "body", "msgtype", "via"]),
                    _json_values, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=600, max_value=4000).map(lambda d: _nested(d, "array")),
)
_segments = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(["!room:hostile.test", "@alice:hostile.test", "$event", "#alias:hostile.test",
                     "hostile.test", "m.room.message", "m.login.sso", "ed25519:a", "1", "-1", "..", "%",
                     "\x00", "a" * 300]),
)
_queries = st.dictionaries(
    st.sampled_from(["limit", "from", "to", "dir", "filter", "since", "timeout", "access_token", "via",
                     "server_name", "redirectUrl", "ts", "user_id", "width", "height", "method", "v", "u", "h"]),
    st.text(max_size=30) | st.integers().map(str), max_size=3)


def _fill(template: str, data) -> str:
    def segment(match):
        return urllib.parse.quote(data.draw(_segments), safe="")
    path = re.sub(r"\{[^}]+\}", segment, template)
    query = data.draw(_queries)
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def test_random_input_never_answers_500(server, caplog):
    failures: list[str] = []
    for method, template in server.routes:
        methods = ["GET", "POST"] if method == "*" else [method]
        for m in methods:
            with_token = "logout" not in template and "deactivate" not in template

            @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(data=st.data())
            def check(data):
                path = _fill(template, data)
                body = data.draw(_bodies)
                headers = {"Content-Type": "application/json"}
                if with_token and data.draw(st.booleans()):
                    headers["Authorization"] = f"Bearer {server.token}"
                status, raw, _ = server.request(m, path, body, headers)
                assert status < 500, f"{m} {path} -> {status} {raw[:200]!r} (body {body[:80]!r})"

            try:
                check()
            except AssertionError as e:
                failures.append(str(e).splitlines()[0])
    assert failures == [], "\n".join(failures)
    assert _tracebacks(caplog) == []


def test_nul_characters_are_refused_alike_on_both_engines(server, caplog):
    """PostgreSQL cannot store NUL in text: a NUL in an ID or a name is a 400 on both engines."""
    status, body = server.json("GET", "/_matrix/client/v3/rooms/%00/state", None, server.token)
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    status, body = server.json("PUT", f"/_matrix/client/v3/profile/{urllib.parse.quote(server.user_id)}/displayname",
                               {"displayname": "a\x00b"}, server.token)
    assert status == 400 and body["errcode"] in ("M_INVALID_PARAM", "M_BAD_JSON"), body
    # Escaped inside stored JSON, a NUL is just data: account data keeps it.
    path = f"/_matrix/client/v3/user/{urllib.parse.quote(server.user_id)}/account_data/org.example.nul"
    status, body = server.json("PUT", path, {"v": "a\x00b"}, server.token)
    assert status == 200, body
    assert server.json("GET", path, None, server.token) == (200, {"v": "a\x00b"})
    assert _tracebacks(caplog) == []
