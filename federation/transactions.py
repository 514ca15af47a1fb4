"""Outgoing transactions, pure: their shape and limits, the EDU queue of one destination
(keyed EDUs coalesce), and the retry schedule of a destination that does not answer.

Spec: server-server API, "Transactions" and ``PUT /_matrix/federation/v1/send/{txnId}``
https://spec.matrix.org/latest/server-server-api/#transactions
The I/O (when to send, where the state lives) is in ``gateway.services.federation.sender``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: A transaction carries at most this many PDUs and EDUs (the spec's limits).
MAX_PDUS_PER_TRANSACTION = 50
MAX_EDUS_PER_TRANSACTION = 100

#: EDUs that are worthless once late: dropped, not resent, when a destination fails.
EPHEMERAL_EDU_TYPES = frozenset({"m.typing", "m.presence"})


def build_transaction(origin: str, origin_server_ts: int, pdus: Sequence[Mapping[str, Any]],
                      edus: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body of ``PUT /send/{txnId}``."""
    if len(pdus) > MAX_PDUS_PER_TRANSACTION or len(edus) > MAX_EDUS_PER_TRANSACTION:
        raise ValueError("too many PDUs or EDUs for one transaction")
    body: dict[str, Any] = {"origin": origin, "origin_server_ts": origin_server_ts, "pdus": [dict(p) for p in pdus]}
    if edus:
        body["edus"] = [dict(e) for e in edus]
    return body


def pdu_errors(response: Any) -> dict[str, str]:
    """Event ID -> error from a /send response's ``pdus`` map (entries without an error
    were accepted). A malformed response yields nothing."""
    out: dict[str, str] = {}
    pdus = response.get("pdus") if isinstance(response, dict) else None
    if isinstance(pdus, dict):
        for event_id, result in pdus.items():
            if isinstance(result, dict) and "error" in result:
                out[str(event_id)] = str(result["error"])
    return out


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff per destination (Synapse's ``federation:`` keys)."""

    min_interval_ms: int
    max_interval_ms: int
    multiplier: float = 2.0

    def next_interval(self, current_ms: int, jitter: float = 1.0) -> int:
        """The wait after one more failure, given the current wait (0: none yet).
        ``jitter`` (e.g. uniform 0.8..1.2) spreads retries of many servers."""
        if current_ms <= 0:
            nxt = self.min_interval_ms
        else:
            nxt = current_ms * self.multiplier
        return max(1, min(self.max_interval_ms, int(nxt * jitter)))


class EduQueue:
    """The EDUs waiting for one destination, in order. An EDU sent with a key replaces a
    queued one of the same type and key (a room's latest typing state replaces an older
    one) and moves to the back."""

    def __init__(self, max_size: int = 10_000):
        self._items: OrderedDict[Hashable, dict[str, Any]] = OrderedDict()
        self._counter = itertools.count()
        self.max_size = max_size
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, edu_type: str, content: Mapping[str, Any], key: Hashable | None = None) -> None:
        slot: Hashable = ("k", edu_type, key) if key is not None else ("n", next(self._counter))
        self._items.pop(slot, None)
        self._items[slot] = {"edu_type": edu_type, "content": dict(content)}
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)
            self.dropped += 1

    def take(self, limit: int = MAX_EDUS_PER_TRANSACTION) -> list[tuple[Hashable, dict[str, Any]]]:
        """Remove and return up to ``limit`` EDUs (with their slots, for ``put_back``)."""
        out = []
        while self._items and len(out) < limit:
            out.append(self._items.popitem(last=False))
        return out

    def put_back(self, taken: Sequence[tuple[Hashable, dict[str, Any]]]) -> None:
        """Return EDUs of a failed transaction to the front, dropping ephemeral ones and
        any keyed EDU that a newer one replaced meanwhile."""
        keep = [(slot, edu) for slot, edu in taken
                if edu["edu_type"] not in EPHEMERAL_EDU_TYPES and slot not in self._items]
        rest = list(self._items.items())
        self._items = OrderedDict(keep + rest)

    def drop_ephemeral(self) -> None:
        for slot in [s for s, e in self._items.items() if e["edu_type"] in EPHEMERAL_EDU_TYPES]:
            del self._items[slot]
