"""Run the real OpenID provider (npm oidc-provider, tests/e2e/oidc_provider.mjs) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import AsyncIterator

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_JS = Path(__file__).with_name("oidc_provider.mjs")
OIDC_PROVIDER_MODULE = ROOT / ".cache" / "node" / "node_modules" / "oidc-provider" / "lib" / "index.js"


@contextlib.asynccontextmanager
async def running_oidc_provider(port: int, client: dict) -> AsyncIterator[str]:
    """Start it; yields the issuer URL. Needs scripts/install-node-deps to have run."""
    assert OIDC_PROVIDER_MODULE.exists(), "run scripts/install-node-deps first (npm oidc-provider is missing)"
    proc = await asyncio.create_subprocess_exec(
        "node", str(PROVIDER_JS), str(OIDC_PROVIDER_MODULE), str(port), json.dumps(client),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line.startswith(b"READY "):
            err = await proc.stderr.read()
            raise RuntimeError(f"oidc-provider did not start: {line!r} {err.decode()[-2000:]}")
        yield line.split()[1].decode()
    finally:
        proc.terminate()
        await proc.wait()
