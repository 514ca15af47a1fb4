"""import-synapse, what clients keep on the server: account data (global and per room,
``m.direct``, secret storage, ignored users...), room tags, push rules (users' own, and
their changes to the server-default ones), pushers, read receipts and the notification
counts (push actions) of imported rooms.

Stream positions (account data, receipts) are taken from our own counters, in Synapse's
order; rows that are there already are left alone, so a rerun adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..storage.state import next_position
from .synapse_import import ImportContext, insert_rows, json_text, json_value

#: Synapse's ``push_rules.priority_class`` -> rule kind (-1: the actions of a default rule).
_KINDS = {5: "override", 4: "content", 3: "room", 2: "sender", 1: "underride", 6: "postcontent"}
_OUR_KINDS = ("override", "content", "room", "sender", "underride")
#: What Synapse writes as "" in ``event_push_actions.actions`` (its usual notify and highlight actions).
_DEFAULT_NOTIFY = ["notify", {"set_tweak": "highlight", "value": False}]
_DEFAULT_HIGHLIGHT = ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]


async def import_account_data(ctx: ImportContext) -> None:
    await _account_data(ctx)
    await _push_rules(ctx)
    await _pushers(ctx)
    rooms = {r[0] for r in await ctx.target.fetch("SELECT room_id FROM rooms")}
    await _receipts(ctx, rooms)
    await _push_actions(ctx, rooms)


async def _with_positions(ctx: ImportContext, stream: str, table: str, columns: Sequence[str],
                          rows: list[tuple]) -> None:
    """Insert rows whose last column is a position of ``stream``, taken now in order."""
    if not rows:
        return
    async with ctx.target.transaction() as txn:
        last = await next_position(txn, stream, len(rows))
        placeholders = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await txn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
            [(*r, last - len(rows) + 1 + i) for i, r in enumerate(rows)])


async def _account_data(ctx: ImportContext) -> None:
    src = ctx.source
    rows: list[tuple[str, str, str, str]] = []
    for user_id, kind, content in await src.fetch(
            "SELECT user_id, account_data_type, content FROM account_data ORDER BY stream_id"):
        rows.append((user_id, "", kind, json_text(content)))
    for user_id, room_id, kind, content in await src.fetch(
            "SELECT user_id, room_id, account_data_type, content FROM room_account_data ORDER BY stream_id"):
        rows.append((user_id, room_id, kind, json_text(content)))
    tags: dict[tuple[str, str], dict[str, Any]] = {}
    for user_id, room_id, tag, content in await src.fetch("SELECT user_id, room_id, tag, content FROM room_tags"):
        tags.setdefault((user_id, room_id), {})[tag] = json_value(content) or {}
    rows += [(u, r, "m.tag", json.dumps({"tags": t}, separators=(",", ":"))) for (u, r), t in sorted(tags.items())]
    have = {(r[0], r[1], r[2]) for r in await ctx.target.fetch("SELECT user_id, room_id, type FROM account_data")}
    new = [r for r in rows if ctx.is_local(r[0]) and r[:3] not in have]
    await _with_positions(ctx, "account_data", "account_data", ("user_id", "room_id", "type", "content", "stream_id"),
                          new)
    ctx.count("account data", len([r for r in new if r[2] != "m.tag"]))
    ctx.count("room tags", len([r for r in new if r[2] == "m.tag"]))


async def _push_rules(ctx: ImportContext) -> None:
    """Synapse names rules ``global/<kind>/<id>`` with the kind as a priority class, and
    keeps a content rule's pattern in its conditions; ``push_rules_enable`` holds every
    rule's switch (the server-default ones' too)."""
    src = ctx.source
    enabled = {(r[0], r[1]): bool(r[2]) for r in await src.fetch(
        "SELECT user_name, rule_id, enabled FROM push_rules_enable")}
    own, defaults = [], {}
    for user_id, rule_path, priority_class, priority, conditions, actions in await src.fetch(
            "SELECT user_name, rule_id, priority_class, priority, conditions, actions FROM push_rules"):
        scope, kind, rule_id = _split_rule(rule_path)
        if scope != "global" or not ctx.is_local(user_id):
            continue
        if priority_class == -1:  # the user's actions for a server-default rule
            defaults[(user_id, kind, rule_id)] = [None, json_text(actions)]
            continue
        kind = _KINDS.get(priority_class, kind)
        if kind not in _OUR_KINDS:
            continue
        conditions = json_value(conditions) or []
        pattern = None
        if kind == "content":
            pattern = next((c.get("pattern") for c in conditions if isinstance(c, dict)), None)
        own.append((user_id, kind, rule_id, int(priority), json.dumps(conditions) if kind in ("override", "underride")
                    else None, pattern, json_text(actions), enabled.get((user_id, rule_path), True)))
    for (user_id, rule_path), on in enabled.items():
        scope, kind, rule_id = _split_rule(rule_path)
        if scope == "global" and rule_id.startswith(".") and ctx.is_local(user_id):
            defaults.setdefault((user_id, kind, rule_id), [None, None])[0] = on
    await insert_rows(ctx, "push_rules", ("user_id", "kind", "rule_id", "priority", "conditions", "pattern", "actions",
                                          "enabled"), own, what="push rules")
    await insert_rows(ctx, "push_rules_defaults", ("user_id", "kind", "rule_id", "enabled", "actions"),
                      [(*k, v[0], v[1]) for k, v in sorted(defaults.items())], what="changes to default push rules")


def _split_rule(path: str) -> tuple[str, str, str]:
    scope, _, rest = path.partition("/")
    kind, _, rule_id = rest.partition("/")
    return scope, kind, rule_id


async def _pushers(ctx: ImportContext) -> None:
    """Enabled pushers; the device is the pusher's own, or that of the access token it
    was set with (older Synapse versions)."""
    rows = await ctx.source.fetch(
        "SELECT p.user_name, COALESCE(p.device_id, t.device_id), p.kind, p.app_id, p.pushkey, p.app_display_name,"
        " p.device_display_name, p.profile_tag, p.lang, p.data, p.ts FROM pushers p"
        " LEFT JOIN access_tokens t ON t.id = p.access_token WHERE p.enabled IS NULL OR p.enabled = $1", True)
    await insert_rows(ctx, "pushers", ("user_id", "device_id", "kind", "app_id", "pushkey", "app_display_name",
                                       "device_display_name", "profile_tag", "lang", "data", "created_ts"), [
        (r[0], r[1], r[2], r[3], r[4], r[5] or "", r[6] or "", r[7], r[8] or "en", json_text(r[9]) or "{}",
         int(r[10] or ctx.now_ms)) for r in rows if ctx.is_local(r[0])], what="pushers")


async def _receipts(ctx: ImportContext, rooms: set[str]) -> None:
    """The latest receipt of each user, type and thread in the imported rooms (the
    receipted event's position is ours: timeline events kept Synapse's)."""
    rows = await ctx.source.fetch(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, data FROM receipts_linearized"
        " ORDER BY stream_id")
    positions = await _positions(ctx, {r[4] for r in rows if r[0] in rooms})
    have = {(r[0], r[1], r[2], r[3]) for r in await ctx.target.fetch(
        "SELECT room_id, receipt_type, user_id, thread_id FROM receipts")}
    new = [(r[0], r[1], r[2], r[3] or "", r[4], positions.get(r[4]), json_text(r[5]) or "{}") for r in rows
           if r[0] in rooms]
    new = [r for r in new if r[:4] not in have]
    await _with_positions(ctx, "receipts", "receipts", ("room_id", "receipt_type", "user_id", "thread_id", "event_id",
                                                        "event_stream_ordering", "data", "stream_id"), new)
    ctx.count("receipts", len(new))


async def _positions(ctx: ImportContext, event_ids: set[str]) -> dict[str, int]:
    ids, out = sorted(event_ids), {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        out.update({r[0]: r[1] for r in await ctx.target.fetch(
            "SELECT event_id, stream_ordering FROM events WHERE outlier = FALSE AND event_id IN"
            f" ({', '.join(f'${n + 1}' for n in range(len(chunk)))})", *chunk)})
    return out


async def _push_actions(ctx: ImportContext, rooms: set[str]) -> None:
    """What each event meant for each local user (unread counts, ``/notifications``)."""
    rows = await ctx.source.fetch(
        "SELECT room_id, user_id, event_id, stream_ordering, notif, highlight, thread_id, actions"
        " FROM event_push_actions")
    out = []
    for room_id, user_id, event_id, position, notif, highlight, thread_id, actions in rows:
        if room_id not in rooms or not ctx.is_local(user_id):
            continue
        text = json_text(actions) or json.dumps(_DEFAULT_HIGHLIGHT if highlight else _DEFAULT_NOTIFY)
        out.append((room_id, user_id, event_id, int(position), bool(notif), bool(highlight), thread_id or "main",
                    text))
    await insert_rows(ctx, "event_push_actions", ("room_id", "user_id", "event_id", "stream_ordering", "notif",
                                                  "highlight", "thread_id", "actions"), out, what="push actions")
