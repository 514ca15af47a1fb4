"""Real things on loopback for the network edge: a dnsmasq DNS server, a test CA, HTTPS
servers that answer per Host name, and a TCP listener that counts connections.

dnsmasq must be installed (scripts/install-system-deps); if it cannot start, the tests
fail loudly rather than skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import dns.exception
import dns.message
import dns.query
import pytest
from aiohttp import web

from tests.support.tls import TestCA

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port")


@dataclass
class Dnsmasq:
    """A running dnsmasq; ``nameserver`` is ``(ip, port)`` for the resolver."""

    process: subprocess.Popen
    port: int

    @property
    def nameserver(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def start_dnsmasq(*options: str) -> Dnsmasq:
    """Start dnsmasq authoritative for ``.test`` with ``options`` (``--host-record=...``,
    ``--srv-host=...``) and wait until it answers. Fails the test if it cannot."""
    if not os.access(DNSMASQ, os.X_OK):
        pytest.fail(f"dnsmasq not found at {DNSMASQ}: run scripts/install-system-deps", pytrace=False)
    last_error = ""
    for _attempt in range(3):
        port = free_udp_tcp_port()
        cmd = [
            DNSMASQ, "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=", "--local=/test/",
            "--cache-size=0", *options,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                break
            try:
                query = dns.message.make_query("probe.test", "A")
                dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
                return Dnsmasq(proc, port)
            except (dns.exception.Timeout, OSError):
                time.sleep(0.02)
        else:
            proc.kill()
            proc.wait()
            last_error = "did not answer within 5 s"
    pytest.fail(f"could not start dnsmasq ({' '.join(cmd)}): {last_error}", pytrace=False)


def stop_dnsmasq(server: Dnsmasq) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.process.stderr:
        server.process.stderr.close()


@pytest.fixture(scope="module")
def dnsmasq_factory():
    """``start(*options) -> Dnsmasq``; everything started is stopped after the module."""
    started: list[Dnsmasq] = []

    def start(*options: str) -> Dnsmasq:
        server = start_dnsmasq(*options)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_dnsmasq(server)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def client_ssl_context(test_ca) -> ssl.SSLContext:
    """Trusts only the test CA; verifies host names."""
    return ssl.create_default_context(cafile=str(test_ca.ca_path))


def server_ssl_context(test_ca: TestCA, *names: str) -> ssl.SSLContext:
    issued = test_ca.issue(*names, filename="srv-" + "_".join(names)[:80])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(issued.cert_path), str(issued.key_path))
    return ctx


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class HostRoutingServer:
    """An HTTPS server on 127.0.0.1 that answers per ``(Host without port, path)``.

    ``routes[(host, path)]`` is a handler; anything else is a 404. ``requests`` records
    ``(host, path)`` of every request received.
    """

    port: int = 0
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def route(self, host: str, path: str, handler: Handler) -> None:
        self.routes[(host, path)] = handler

    def json(self, host: str, path: str, body: object, *, headers: dict[str, str] | None = None,
             status: int = 200) -> None:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status, headers=headers)

        self.route(host, path, handler)

    def raw(self, host: str, path: str, body: bytes, *, status: int = 200,
            headers: dict[str, str] | None = None) -> None:
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, status=status, headers=headers)

        self.route(host, path, handler)

    def hits(self, host: str) -> int:
        return sum(1 for h, _ in self.requests if h == host)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") else request.host
        self.requests.append((host, request.path))
        handler = self.routes.get((host, request.path))
        if handler is None:
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        return await handler(request)


async def start_https(ssl_context: ssl.SSLContext, host: str = "127.0.0.1") -> tuple[HostRoutingServer, web.AppRunner]:
    server = HostRoutingServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._dispatch)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return server, runner


@pytest.fixture
async def https_factory():
    """``await start(ssl_context, host="127.0.0.1") -> HostRoutingServer``, stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(ctx: ssl.SSLContext, host: str = "127.0.0.1") -> HostRoutingServer:
        server, runner = await start_https(ctx, host)
        runners.append(runner)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


@dataclass
class CountingListener:
    """A TCP listener that only counts accepted connections (to prove none was made)."""

    host: str
    port: int
    connections: int = 0


@pytest.fixture
async def counting_listener_factory():
    servers: list[asyncio.base_events.Server] = []

    async def start(host: str) -> CountingListener:
        listener = CountingListener(host, 0)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            listener.connections += 1
            writer.close()

        server = await asyncio.start_server(on_connect, host, 0)
        listener.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return listener

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
