"""Drive matrix-js-sdk 43 (the SDK inside Element Web) from the tests, in node.

A scenario is a ``.mjs`` module whose default export is ``async (ctx) => result``;
``run_scenario`` runs it through ``tests/support/js/sdk_driver.mjs`` (which logs clients
in, waits for their first sync, polyfills node 20 and stops the clients afterwards) and
returns its result as JSON. ``ctx`` is described at the top of the driver.

Needs node and ``.cache/node/node_modules`` (``scripts/install-node-deps``).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SDK_INDEX = ROOT / ".cache" / "node" / "node_modules" / "matrix-js-sdk" / "lib" / "index.js"
DRIVER = Path(__file__).with_name("js") / "sdk_driver.mjs"


class ScenarioError(AssertionError):
    """The scenario threw (an assertion of its own, or the SDK's error)."""


async def run_scenario(scenario: str | Path, *, base_url: str, args: Any = None, timeout: float = 180,
                       debug: bool = False) -> Any:
    """Run ``scenario`` against the homeserver at ``base_url``; returns what it returned.
    ``ScenarioError`` (with the JavaScript stack and node's stderr) when it throws;
    ``debug`` lets the SDK log to stderr."""
    assert SDK_INDEX.exists(), "matrix-js-sdk is missing: run scripts/install-node-deps"
    request = json.dumps({"sdk": str(SDK_INDEX), "scenario": str(Path(scenario).resolve()), "baseUrl": base_url,
                          "args": args}).encode()
    env = {**os.environ, **({"JS_SDK_DEBUG": "1"} if debug else {})}
    proc = await asyncio.create_subprocess_exec(
        "node", str(DRIVER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(request), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ScenarioError(f"{Path(scenario).name} did not finish in {timeout}s") from None
    lines = [line for line in stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    try:
        outcome = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ScenarioError(f"{Path(scenario).name} gave no result (exit {proc.returncode}):\n"
                            f"{stdout.decode()[-2000:]}\n{stderr.decode()[-4000:]}") from None
    if not outcome.get("ok"):
        raise ScenarioError(f"{Path(scenario).name}: {outcome.get('error')}\n{outcome.get('stack')}\n"
                            f"{stderr.decode()[-4000:]}")
    return outcome["result"]


#: Config for a gateway whose users a scenario registers and logs in with passwords.
OPEN_REGISTRATION = {"enable_registration": True, "enable_registration_without_verification": True,
                     "bcrypt_rounds": 4}


async def register_users(base_url: str, *names: str) -> dict[str, dict[str, str]]:
    """Register users (``m.login.dummy``); returns ``{name: {"user", "password"}}``, the
    shape scenarios take for ``login``."""
    import aiohttp

    users = {}
    async with aiohttp.ClientSession() as s:
        for name in names:
            async with s.post(f"{base_url}/_matrix/client/v3/register", json={
                    "username": name, "password": f"{name}-password", "auth": {"type": "m.login.dummy"}}) as r:
                assert r.status == 200, await r.text()
            users[name] = {"user": name, "password": f"{name}-password"}
    return users
