"""A real coturn (Debian's ``coturn``) on loopback, run as our own process with its own
config file, and coturn's ``turnutils_uclient`` to allocate a relay with some credentials.

Needs ``turnserver`` and ``turnutils_uclient`` (scripts/install-system-deps).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from tests.conftest import free_port


@dataclass
class Coturn:
    port: int
    realm: str
    log_path: Path

    @property
    def uri(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


@contextlib.asynccontextmanager
async def running_coturn(directory: Path, *, shared_secret: str | None = None,
                         users: dict[str, str] | None = None, realm: str = "gateway.test") -> AsyncIterator[Coturn]:
    """coturn with ``use-auth-secret`` (``shared_secret``) or long-term ``users``."""
    assert shutil.which("turnserver"), "coturn is missing: run scripts/install-system-deps"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"listening-port={port}", "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"realm={realm}",
             "no-tls", "no-dtls", "no-cli", "allow-loopback-peers", f"userdb={directory / 'turndb'}",
             f"pidfile={directory / 'turnserver.pid'}", f"log-file={directory / 'turnserver.log'}", "simple-log"]
    if shared_secret is not None:
        lines += ["use-auth-secret", f"static-auth-secret={shared_secret}"]
    else:
        lines += ["lt-cred-mech"] + [f"user={name}:{password}" for name, password in (users or {}).items()]
    conf = directory / "turnserver.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = await asyncio.create_subprocess_exec("turnserver", "-c", str(conf), stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await _wait_listening(port, proc)
        yield Coturn(port, realm, directory / "turnserver.log")
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_listening(port: int, proc: asyncio.subprocess.Process, timeout: float = 20) -> None:
    """Until coturn accepts TCP connections on its port (it listens on TCP and UDP)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if proc.returncode is not None:
            raise RuntimeError(f"turnserver exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise RuntimeError(f"turnserver did not listen on {port} in {timeout}s") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def allocate(coturn: Coturn, username: str, password: str) -> tuple[bool, str]:
    """Allocate a relay on ``coturn`` over UDP with these long-term credentials and send a
    few messages through it (``turnutils_uclient``): (whether it worked, its output)."""
    proc = await asyncio.create_subprocess_exec(
        "turnutils_uclient", "-u", username, "-w", password, "-p", str(coturn.port), "-n", "2", "-m", "1", "-y",
        "-e", "127.0.0.1", "127.0.0.1", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode("utf-8", "replace")
    return proc.returncode == 0 and "tot_recv_msgs=" in text and "Cannot complete Allocation" not in text, text
