"""``gateway import-synapse``: the shared machinery of the import steps (what they read,
where they write, how rows go across) and the order they run in.

Every step reads Synapse's tables with plain SQL through our database API (Synapse on
SQLite or PostgreSQL) and writes our tables with ``ON CONFLICT DO NOTHING`` or through our
storage modules, so that running the import again after a crash or Ctrl-C finishes the
job without duplicates (rooms go in one transaction each and are skipped once there).
See docs/porting.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.signing import parse_signing_keys

from ..config import HomeserverConfig
from ..storage.database import Database
from . import PortingError
from .synapse_source import SynapseDeployment

log = logging.getLogger(__name__)


@dataclass
class ImportContext:
    """What every step gets: Synapse's database, ours, and both configs."""

    source: Database
    target: Database
    deployment: SynapseDeployment
    config: HomeserverConfig
    report: Callable[[str], None] = log.info
    now_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    #: What each step brought over: "users" -> 3, ...
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def server_name(self) -> str:
        return self.deployment.server_name

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self.server_name)

    def count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + n


async def insert_rows(ctx: ImportContext, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                      *, what: str | None = None) -> int:
    """Insert rows into one of our tables, leaving rows that are there already (a rerun)."""
    rows = [tuple(r) for r in rows]
    if rows:
        placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await ctx.target.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING", rows)
    ctx.count(what or table, len(rows))
    return len(rows)


def json_text(value: Any) -> str | None:
    """A JSON column's value as text (Synapse keeps JSON as text; PostgreSQL may hand back
    a parsed value for its json columns): compact, as Synapse wrote it."""
    if value is None:
        return None
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_value(value: Any) -> Any:
    text = json_text(value)
    return None if text is None else json.loads(text)


def check_same_deployment(ours: HomeserverConfig, theirs: SynapseDeployment) -> None:
    """Our config must be Synapse's deployment: same server name, same signing key, same
    password pepper (else no signature, federation key or password would carry over)."""
    if ours.server_name != theirs.server_name:
        raise PortingError(f"server_name differs: Synapse's is {theirs.server_name!r}, ours {ours.server_name!r}; "
                           "user and room IDs carry the server name, so ours must be the same")
    synapse_keys = _read_keys(theirs.signing_key_path, "Synapse's signing_key_path")
    our_keys = _read_keys(ours.signing_key_path, "our signing_key_path")
    if {(k.key_id, k.seed) for k in synapse_keys} - {(k.key_id, k.seed) for k in our_keys} \
            or our_keys[0].key_id != synapse_keys[0].key_id:
        raise PortingError(f"our signing_key_path ({ours.signing_key_path}) does not hold Synapse's signing key "
                           f"{synapse_keys[0].key_id}: point signing_key_path at {theirs.signing_key_path}, so "
                           "that other servers keep trusting this server's events and keys")
    if ours.password_pepper != theirs.pepper:
        raise PortingError("password_config.pepper differs from Synapse's: set the same pepper in our config, "
                           "or no password would match")


def _read_keys(path: str, what: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            keys = parse_signing_keys(f.read())
    except OSError as e:
        raise PortingError(f"{what}: cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise PortingError(f"{what}: {path}: {e}") from None
    if not keys:
        raise PortingError(f"{what}: {path} holds no key")
    return keys


async def run_import(ctx: ImportContext) -> dict[str, int]:
    """Every step, in order; returns what each brought over."""
    from . import (synapse_account_data, synapse_accounts, synapse_appservices, synapse_e2ee, synapse_media,
                   synapse_rooms)

    check_same_deployment(ctx.config, ctx.deployment)
    steps: list[tuple[str, Callable[[ImportContext], Any]]] = [
        ("accounts", synapse_accounts.import_accounts),
        ("rooms", synapse_rooms.import_rooms),
        ("end-to-end encryption", synapse_e2ee.import_e2ee),
        ("account data", synapse_account_data.import_account_data),
        ("media", synapse_media.import_media),
        ("application services", synapse_appservices.import_appservices),  # last: the positions it leaves
    ]
    for name, step in steps:
        before = dict(ctx.counts)
        await step(ctx)
        done = {k: v - before.get(k, 0) for k, v in ctx.counts.items() if v != before.get(k, 0)}
        ctx.report(f"{name}: " + (", ".join(f"{v} {k}" for k, v in done.items()) or "nothing"))
    return ctx.counts
