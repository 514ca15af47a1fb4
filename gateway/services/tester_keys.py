"""Signing keys the federation tester publishes for one run only, and who fetched our keys
while they were published.

The tester signs a request to the tested server with a fresh key; the server can only
check that signature after fetching the key from our key server (or from a notary that
fetches it from us), so a fetch seen during the run proves its outbound federation
reaches us. Issue 22, "Both directions"; spec: server-server API, "Publishing Keys".
"""

from __future__ import annotations

import contextlib
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from federation.signing import ServerSigningKey, generate_signing_key

#: At most this many runs publish a key at once; more wait for their turn outside.
MAX_RUN_KEYS = 32


@dataclass
class TesterRun:
    key: ServerSigningKey
    #: ``{"From", "UserAgent", "KeyID", "At"}`` for every fetch of our keys during the run.
    fetches: list[dict[str, Any]] = field(default_factory=list)


class TesterKeys:
    """The run keys currently published; ``server_keys_response`` adds them."""

    def __init__(self) -> None:
        self._runs: dict[str, TesterRun] = {}

    def published(self) -> list[ServerSigningKey]:
        return [run.key for run in self._runs.values()]

    def full(self) -> bool:
        return len(self._runs) >= MAX_RUN_KEYS

    @contextlib.contextmanager
    def run(self) -> Iterator[TesterRun]:
        """Publish a fresh key while the block runs; the key is gone afterwards."""
        version = "tester_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(10))
        run = TesterRun(generate_signing_key(version))
        self._runs[run.key.key_id] = run
        try:
            yield run
        finally:
            self._runs.pop(run.key.key_id, None)

    def note_fetch(self, remote: str | None, user_agent: str | None, key_id: str | None) -> None:
        """Our key server answered a fetch: every run in progress records it."""
        if not self._runs:
            return
        seen = {"From": remote or "", "UserAgent": (user_agent or "")[:200], "KeyID": key_id, "At": int(time.time())}
        for run in self._runs.values():
            if len(run.fetches) < 20 and (key_id is None or key_id == run.key.key_id or key_id not in self._runs):
                run.fetches.append(seen)
