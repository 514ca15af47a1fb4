"""A real CAS server for tests: django-mama-cas in a tiny Django project on loopback.

``running_cas_server(port, directory)`` starts it in a subprocess (its own SQLite database
under ``directory``) with the users of ``USERS``; yields the server URL. Synchronous, so a
module-scoped fixture can share one server between tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[3]

#: username -> (password, full name, staff?)
USERS = {
    "carol": ("carol-password", "Carol Cas", True),
    "dan": ("dan-password", "Dan Visitor", False),
    "Erin.Upper": ("erin-password", "Erin", True),
}


@contextlib.contextmanager
def running_cas_server(port: int, directory: Path) -> Iterator[str]:
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CAS_TEST_DB": str(directory / "cas.sqlite3"), "CAS_TEST_USERS": json.dumps(USERS),
           "DJANGO_SETTINGS_MODULE": "tests.support.cas_server.settings", "PYTHONPATH": str(ROOT)}
    log = open(directory / "cas-server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.cas_server.run", str(port)], cwd=str(ROOT),
                            env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        line = proc.stdout.readline()  # the server prints READY once listening, or dies
        if not line.startswith(b"READY "):
            proc.wait(10)
            raise RuntimeError(f"CAS server did not start: {line!r} "
                               f"{(directory / 'cas-server.log').read_text()[-3000:]}")
        yield line.split()[1].decode()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
