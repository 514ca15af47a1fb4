"""Run a real SAML identity provider (npm saml-idp, node-samlp underneath) on loopback.

It signs its responses and their assertions with its own RSA key (xml-crypto), and shows a
sign-in form with the user's attributes (tests/e2e/saml_idp_profile.js) that a browser fills.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import AsyncIterator

from tests.support.saml_idp import self_signed

ROOT = Path(__file__).resolve().parents[2]
SAML_IDP_APP = ROOT / ".cache" / "node" / "node_modules" / "saml-idp" / "app.js"
PROFILE = Path(__file__).with_name("saml_idp_profile.js")
ISSUER = "urn:gateway-tests:saml-idp"


@contextlib.asynccontextmanager
async def running_saml_idp(port: int, directory: Path, acs_url: str, audience: str) -> AsyncIterator[str]:
    """Start it; yields its base URL (metadata at ``/metadata``). Needs scripts/install-node-deps."""
    assert SAML_IDP_APP.exists(), "run scripts/install-node-deps first (npm saml-idp is missing)"
    key, cert = self_signed(directory, "saml-idp")
    proc = await asyncio.create_subprocess_exec(
        "node", str(SAML_IDP_APP), "--host", "127.0.0.1", "--port", str(port), "--issuer", ISSUER,
        "--acsUrl", acs_url, "--audience", audience, "--cert", str(cert), "--key", str(key),
        "--configFile", str(PROFILE),
        cwd=str(directory), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        seen = b""
        while b"IdP server ready" not in seen:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                err = await proc.stderr.read()
                raise RuntimeError(f"saml-idp did not start: {seen.decode()[-2000:]} {err.decode()[-2000:]}")
            seen += line
        # Keep draining its (chatty) log so it never blocks on a full pipe.
        drains = [asyncio.create_task(_drain(proc.stdout)), asyncio.create_task(_drain(proc.stderr))]
        yield f"http://127.0.0.1:{port}"
        for drain in drains:
            drain.cancel()
    finally:
        proc.terminate()
        await proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
