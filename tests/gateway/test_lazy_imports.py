"""Optional features' libraries are imported when the config enables them or at their first
use, not by a server that does not use them: they cost resident memory in every process
(docs/performance.md, "Memory"). Each check runs a real server in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]

#: Started as its own interpreter: serves the config until it answers, makes a few client
#: requests that touch no optional feature, then prints ``sys.modules``.
_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import aiohttp
    from gateway.__main__ import serve
    from gateway.config import load_config

    async def main():
        config = load_config(sys.argv[1])
        stop, started = asyncio.Event(), asyncio.Event()
        server = asyncio.create_task(serve(config, stop, started))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait([server, waiter], return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()
        base = f"http://127.0.0.1:{config.listeners[0].port}"
        async with aiohttp.ClientSession() as s:
            for path in ("/_matrix/client/versions", "/_matrix/client/v3/login", "/health"):
                async with s.get(base + path) as r:
                    assert r.status == 200, (path, r.status)
        modules = sorted(sys.modules)
        stop.set()
        await server
        print(json.dumps(modules))

    asyncio.run(main())
""")


def _modules_of_server(tmp_path: Path, extra: dict | None = None, resources=("client",)) -> set[str]:
    config = {
        "server_name": "lazy.test",
        "public_baseurl": "http://127.0.0.1/",
        "listeners": [{"port": free_port(), "bind_addresses": ["127.0.0.1"], "type": "http",
                       "resources": [{"names": list(resources)}]}],
        "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "homeserver.db")}},
        "signing_key_path": str(tmp_path / "signing.key"),
        "media_store_path": str(tmp_path / "media"),
        **(extra or {}),
    }
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


def test_a_server_without_optional_features_imports_none_of_their_libraries(tmp_path):
    modules = _modules_of_server(tmp_path)
    assert "gateway.client_api.sync" in modules  # the check sees the server's modules
    for package in (
        "saml2",  # SAML, only with saml2_config
        "authlib", "joserfc",  # OIDC, only with oidc_providers
        "jwt",  # JWT login and id_tokens, at the first use
        "cryptography.x509",  # the federation tester's certificate parser
        "PIL",  # thumbnails, at the first one
        "jinja2",  # pages and mails, at the first one rendered
        "dns",  # dnspython, at the first federation lookup
        "asyncpg.protocol",  # PostgreSQL only (a lazy module object stands for asyncpg)
        "federation.net.tester",  # the federation tester, at the first test
        "gateway.federation_api.transactions",  # a listener without the federation resource
        "gateway.replication_api",
    ):
        assert _loaded(modules, package) == [], package


def test_a_federation_listener_imports_the_federation_handlers(tmp_path):
    modules = _modules_of_server(tmp_path, resources=("client", "federation"))
    assert "gateway.federation_api.transactions" in modules
    assert _loaded(modules, "saml2") == []
