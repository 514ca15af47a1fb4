"""Run our server in-process on loopback (plain client listener, TLS federation listener)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from gateway.__main__ import serve
from gateway.config import HomeserverConfig, parse_config
from tests.conftest import GENEROUS_RATE_LIMITS, free_port
from tests.support.tls import TestCA


@dataclass
class RunningGateway:
    config: HomeserverConfig
    server_name: str
    client_url: str
    federation_url: str


@contextlib.asynccontextmanager
async def running_gateway(directory: Path, ca: TestCA,
                          extra: dict | Callable[[str], dict] | None = None,
                          ports: tuple[int, int] | None = None,
                          host: str = "127.0.0.1") -> AsyncIterator[RunningGateway]:
    """``extra``: config keys to add, or a function of the server name that returns them.
    ``ports`` (federation, client): to start the same server again (its name is its port).
    ``host``: another loopback address for the federation listener (its name is then
    ``host:port``), e.g. one a peer's IP rules block."""
    fed_port, client_port = ports or (free_port(), free_port())
    server_name = f"{host}:{fed_port}"
    if callable(extra):
        extra = extra(server_name)
    cert = ca.issue(host, filename=f"gateway-{fed_port}")
    data = {
        "server_name": server_name,
        "public_baseurl": f"http://127.0.0.1:{client_port}/",
        "listeners": [
            {"port": fed_port, "bind_addresses": [host], "tls": True, "resources": [{"names": ["federation"]}]},
            {"port": client_port, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]},
        ],
        "tls_certificate_path": str(cert.cert_path),
        "tls_private_key_path": str(cert.key_path),
        "database": {"name": "sqlite3", "args": {"database": str(directory / "gateway.db")}},
        "signing_key_path": str(directory / "gateway.signing.key"),
        **GENEROUS_RATE_LIMITS,
        **(extra or {}),
    }
    config = parse_config(data, config_path=str(directory / "homeserver.yaml"))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(config, stop, started))
    done, _ = await asyncio.wait({task, asyncio.ensure_future(started.wait())}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the startup error
    try:
        yield RunningGateway(config, server_name, f"http://127.0.0.1:{client_port}", f"https://{host}:{fed_port}")
    finally:
        stop.set()
        await task
