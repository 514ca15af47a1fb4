"""Run ``gateway run`` as a real subprocess (as an operator would) on a loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import yaml

from tests.conftest import GENEROUS_RATE_LIMITS, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 60) -> None:
    """Until something listens on 127.0.0.1:``port``; fails with the end of ``log`` (the
    process's output) if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not listen on {port} within {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def gateway_process(directory: Path, config: dict) -> Iterator[int]:
    """``config`` (its first listener's port is replaced by a free one) with a SQLite
    database, key and media store in ``directory``; yields the listener's port."""
    config = {**config}
    port = free_port()
    config["listeners"] = [{**config["listeners"][0], "port": port}, *config["listeners"][1:]]
    config = {
        "database": {"name": "sqlite3", "args": {"database": str(directory / "hs.db")}},
        "signing_key_path": str(directory / "hs.signing.key"), "media_store_path": str(directory / "media"),
        "bcrypt_rounds": 4, "send_federation": False, **GENEROUS_RATE_LIMITS, **config,
    }
    path = directory / "homeserver.yaml"
    path.write_text(yaml.safe_dump(config))
    log = directory / "gateway.log"
    with open(log, "wb") as out:  # a file, not a pipe: nobody reads a pipe, and a full one blocks the server
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "-c", str(path)], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": ROOT}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, "gateway", log)
        yield port
    finally:
        stop_process(proc)
