"""Push rules: the server-default rule set and a pure evaluator (no I/O).

Spec: https://spec.matrix.org/latest/client-server-api/#push-rules (conditions, actions,
predefined rules), https://spec.matrix.org/latest/appendices/#glob-style-matching and
https://spec.matrix.org/latest/appendices/#dot-separated-property-paths.

The caller gathers what the conditions need (the room's member count, the user's display
name in the room, the sender's power level and the room's notification levels) into a
``PushContext`` and asks ``evaluate`` for the actions of the first matching rule.

The legacy body-matching rules (``.m.rule.contains_display_name``,
``.m.rule.contains_user_name``, ``.m.rule.roomnotif``), removed from the spec in v1.17 but
still what many clients show, are kept; as the spec said when intentional mentions came
(v1.7), they do not apply to events whose content has ``m.mentions``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

#: Rule kinds, in the order they are checked.
KINDS = ("override", "content", "room", "sender", "underride")

#: Rules that look for mentions in the body; skipped for events with ``m.mentions``.
LEGACY_MENTION_RULES = frozenset({".m.rule.contains_display_name", ".m.rule.contains_user_name",
                                  ".m.rule.roomnotif"})

_SOUND_DEFAULT = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}
_USER = "[the user's Matrix ID]"
_LOCALPART = "[the user's localpart]"


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


def _rule(rule_id: str, conditions: list[dict[str, Any]] | None, actions: list[Any], *,
          enabled: bool = True, pattern: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"rule_id": rule_id, "default": True, "enabled": enabled, "actions": actions}
    if conditions is not None:
        rule["conditions"] = conditions
    if pattern is not None:
        rule["pattern"] = pattern
    return rule


#: The predefined rules (spec order within each kind); ``_USER`` / ``_LOCALPART`` are
#: replaced per user by ``default_rules``.
_DEFAULT_RULES: dict[str, list[dict[str, Any]]] = {
    "override": [
        _rule(".m.rule.master", [], [], enabled=False),
        _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
        _rule(".m.rule.invite_for_me", [_match("type", "m.room.member"), _match("content.membership", "invite"),
                                        _match("state_key", _USER)], ["notify", _SOUND_DEFAULT]),
        _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
        _rule(".m.rule.is_user_mention",
              [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": _USER}],
              ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
        _rule(".m.rule.contains_display_name", [{"kind": "contains_display_name"}],
              ["notify", _SOUND_DEFAULT, _HIGHLIGHT]),
        _rule(".m.rule.is_room_mention",
              [{"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
               {"kind": "sender_notification_permission", "key": "room"}],
              ["notify", _HIGHLIGHT]),
        _rule(".m.rule.roomnotif",
              [{"kind": "sender_notification_permission", "key": "room"}, _match("content.body", "@room")],
              ["notify", _HIGHLIGHT]),
        _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")],
              ["notify", _HIGHLIGHT]),
        _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
        _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
        _rule(".m.rule.suppress_edits",
              [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}], []),
    ],
    "content": [
        _rule(".m.rule.contains_user_name", None, ["notify", _SOUND_DEFAULT, _HIGHLIGHT], pattern=_LOCALPART),
    ],
    "room": [],
    "sender": [],
    "underride": [
        _rule(".m.rule.call", [_match("type", "m.call.invite")],
              ["notify", {"set_tweak": "sound", "value": "ring"}]),
        _rule(".m.rule.encrypted_room_one_to_one",
              [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
              ["notify", _SOUND_DEFAULT]),
        _rule(".m.rule.room_one_to_one",
              [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
              ["notify", _SOUND_DEFAULT]),
        _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
        _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
    ],
}


def _substitute(value: Any, user_id: str, localpart: str) -> Any:
    if value == _USER:
        return user_id
    if value == _LOCALPART:
        return localpart
    if isinstance(value, dict):
        return {k: _substitute(v, user_id, localpart) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, user_id, localpart) for v in value]
    return value


def default_rules(user_id: str) -> dict[str, list[dict[str, Any]]]:
    """The server-default rules for ``user_id``: kind -> rules (fresh copies)."""
    localpart = user_id[1:].split(":", 1)[0]
    return {kind: [_substitute(copy.deepcopy(r), user_id, localpart) for r in rules]
            for kind, rules in _DEFAULT_RULES.items()}


def is_default_rule_id(rule_id: str) -> bool:
    return rule_id.startswith(".")


def default_rule_ids(kind: str) -> list[str]:
    return [r["rule_id"] for r in _DEFAULT_RULES.get(kind, [])]


def merge_ruleset(
    defaults: Mapping[str, list[dict[str, Any]]], user_rules: Mapping[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The full ruleset: per kind, ``.m.rule.master`` first, then the user's rules (most
    important first), then the other server-default rules."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        defs = list(defaults.get(kind, []))
        head = [r for r in defs if r["rule_id"] == ".m.rule.master"]
        tail = [r for r in defs if r["rule_id"] != ".m.rule.master"]
        out[kind] = head + list(user_rules.get(kind, [])) + tail
    return out


# --- conditions ------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def split_path(key: str) -> tuple[str, ...]:
    """A dot-separated property path -> property names (``\\.`` and ``\\\\`` escapes)."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key) and key[i + 1] in ".\\":
            buf.append(key[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return tuple(parts)


_MISSING = object()


def lookup(event: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    value: Any = event
    for part in split_path(key):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, word_boundary: bool) -> re.Pattern[str]:
    """``*`` and ``?`` globs, case-insensitive; whole value, or a substring between word
    boundaries (for ``content.body``)."""
    body = "".join(".*?" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    if word_boundary:
        return re.compile(rf"(?:^|[^A-Za-z0-9_])(?:{body})(?:$|[^A-Za-z0-9_])", re.IGNORECASE | re.DOTALL)
    return re.compile(rf"(?:{body})\Z", re.IGNORECASE | re.DOTALL)


def event_match(event: Mapping[str, Any], key: str, pattern: str) -> bool:
    value = lookup(event, key)
    if not isinstance(value, str):
        return False
    regex = glob_regex(pattern, key == "content.body")
    return regex.search(value) is not None if key == "content.body" else regex.match(value) is not None


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)):
        return True
    return isinstance(value, int) and -(2**53) < value < 2**53


def _same(a: Any, b: Any) -> bool:
    # Exact: no casting between booleans and integers.
    return type(a) is type(b) and a == b


def event_property_is(event: Mapping[str, Any], key: str, value: Any) -> bool:
    found = lookup(event, key)
    return found is not _MISSING and _is_scalar(found) and _same(found, value)


def event_property_contains(event: Mapping[str, Any], key: str, value: Any) -> bool:
    found = lookup(event, key)
    if not isinstance(found, list):
        return False
    return any(_is_scalar(v) and _same(v, value) for v in found)


_COUNT = re.compile(r"^(==|<=|>=|<|>)?([0-9]+)$")


def room_member_count_matches(spec: Any, count: int) -> bool:
    if not isinstance(spec, str):
        return False
    m = _COUNT.match(spec)
    if not m:
        return False
    op, n = m.group(1) or "==", int(m.group(2))
    return {"==": count == n, "<": count < n, ">": count > n, "<=": count <= n, ">=": count >= n}[op]


@lru_cache(maxsize=4096)
def _display_name_regex(display_name: str) -> re.Pattern[str]:
    return re.compile(rf"(?:^|[^A-Za-z0-9_]){re.escape(display_name)}(?:$|[^A-Za-z0-9_])", re.IGNORECASE)


def contains_display_name(event: Mapping[str, Any], display_name: str | None) -> bool:
    body = lookup(event, "content.body")
    if not display_name or not isinstance(body, str):
        return False
    return _display_name_regex(display_name).search(body) is not None


@dataclass(frozen=True)
class PushContext:
    """What conditions need beyond the event, for one user in one room."""

    user_id: str
    display_name: str | None
    member_count: int
    sender_power_level: int | float
    #: ``notifications`` levels of the room's power levels (``room`` defaults to 50).
    notification_levels: Mapping[str, int] = field(default_factory=dict)


def condition_matches(cond: Any, event: Mapping[str, Any], ctx: PushContext) -> bool:
    """One condition; unknown or malformed conditions never match."""
    if not isinstance(cond, Mapping):
        return False
    kind = cond.get("kind")
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        return isinstance(key, str) and isinstance(pattern, str) and event_match(event, key, pattern)
    if kind == "event_property_is":
        key = cond.get("key")
        return isinstance(key, str) and "value" in cond and event_property_is(event, key, cond["value"])
    if kind == "event_property_contains":
        key = cond.get("key")
        return isinstance(key, str) and "value" in cond and event_property_contains(event, key, cond["value"])
    if kind == "contains_display_name":
        return contains_display_name(event, ctx.display_name)
    if kind == "room_member_count":
        return room_member_count_matches(cond.get("is"), ctx.member_count)
    if kind == "sender_notification_permission":
        key = cond.get("key")
        if not isinstance(key, str):
            return False
        return ctx.sender_power_level >= ctx.notification_levels.get(key, 50)
    return False


def _condition_key(cond: Any) -> Any:
    """A hashable key for a condition whose result is the same for every user evaluated
    for one event (everything but ``contains_display_name``); None otherwise."""
    if not isinstance(cond, Mapping):
        return ("invalid",)
    kind = cond.get("kind")
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        return (kind, key, pattern) if isinstance(key, str) and isinstance(pattern, str) else ("invalid",)
    if kind in ("event_property_is", "event_property_contains"):
        value = cond.get("value")
        if not _is_scalar(value) or not isinstance(cond.get("key"), str):
            return None
        return (kind, cond["key"], type(value).__name__, value)
    if kind == "room_member_count":
        spec = cond.get("is")
        return (kind, spec) if isinstance(spec, str) else ("invalid",)
    if kind == "sender_notification_permission":
        key = cond.get("key")
        return (kind, key) if isinstance(key, str) else ("invalid",)
    if kind == "contains_display_name":
        return None
    return ("invalid",)  # unknown conditions never match


def rule_matches(kind: str, rule: Mapping[str, Any], event: Mapping[str, Any], ctx: PushContext) -> bool:
    if not rule.get("enabled", True):
        return False
    rule_id = rule.get("rule_id")
    if rule_id in LEGACY_MENTION_RULES and isinstance(event.get("content"), Mapping) \
            and "m.mentions" in event["content"]:
        return False
    if kind in ("override", "underride"):
        conditions = rule.get("conditions") or []
        return all(condition_matches(c, event, ctx) for c in conditions)
    if kind == "content":
        pattern = rule.get("pattern")
        return isinstance(pattern, str) and event_match(event, "content.body", pattern)
    if kind == "room":
        return event.get("room_id") == rule_id
    if kind == "sender":
        return event.get("sender") == rule_id
    return False


def evaluate(ruleset: Mapping[str, Sequence[Mapping[str, Any]]], event: Mapping[str, Any],
             ctx: PushContext) -> list[Any] | None:
    """The actions of the first matching rule (historical actions dropped), or None."""
    for kind in KINDS:
        for rule in ruleset.get(kind, ()):
            if rule_matches(kind, rule, event, ctx):
                return clean_actions(rule.get("actions") or [])
    return None


@dataclass(frozen=True)
class CompiledRule:
    kind: str
    rule_id: Any
    actions: tuple[Any, ...]
    legacy: bool
    #: (memo key or None, condition): a key marks a result that is the same for every
    #: user evaluated for one event.
    conditions: tuple[tuple[Any, Any], ...]


def compile_ruleset(ruleset: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[CompiledRule, ...]:
    """A ruleset prepared for ``evaluate_compiled``: the enabled rules in evaluation
    order, content rules as their ``content.body`` condition, and memo keys."""
    out = []
    for kind in KINDS:
        for rule in ruleset.get(kind, ()):
            if not rule.get("enabled", True):
                continue
            conditions: tuple[tuple[Any, Any], ...] = ()
            if kind in ("override", "underride"):
                conditions = tuple((_condition_key(c), c) for c in rule.get("conditions") or [])
            elif kind == "content":
                cond = {"kind": "event_match", "key": "content.body", "pattern": rule.get("pattern")}
                conditions = ((_condition_key(cond), cond),)
            out.append(CompiledRule(kind, rule.get("rule_id"), tuple(clean_actions(rule.get("actions") or [])),
                                    rule.get("rule_id") in LEGACY_MENTION_RULES, conditions))
    return tuple(out)


def evaluate_compiled(rules: Sequence[CompiledRule], event: Mapping[str, Any], ctx: PushContext,
                      memo: dict[Any, bool]) -> tuple[Any, ...] | None:
    """``evaluate`` for many users of one event: pass the same ``memo`` (a new dict per
    event) for all of them, so that conditions that do not depend on the user are
    evaluated once per event."""
    content = event.get("content")
    has_mentions = isinstance(content, Mapping) and "m.mentions" in content
    for r in rules:
        if r.legacy and has_mentions:
            continue
        if r.kind == "room":
            hit = event.get("room_id") == r.rule_id
        elif r.kind == "sender":
            hit = event.get("sender") == r.rule_id
        else:
            hit = True
            for key, cond in r.conditions:
                if key is None:
                    ok = condition_matches(cond, event, ctx)
                else:
                    ok = memo.get(key)
                    if ok is None:
                        ok = memo[key] = condition_matches(cond, event, ctx)
                if not ok:
                    hit = False
                    break
        if hit:
            return r.actions
    return None


def clean_actions(actions: Sequence[Any]) -> list[Any]:
    """Drop the historical ``dont_notify`` and ``coalesce`` actions."""
    return [a for a in actions if a not in ("dont_notify", "coalesce")]


def notify_and_highlight(actions: Sequence[Any] | None) -> tuple[bool, bool]:
    """Whether actions notify, and whether they highlight (a highlight tweak without a
    value means true)."""
    if not actions:
        return False, False
    notify = "notify" in actions
    highlight = False
    for a in actions:
        if isinstance(a, Mapping) and a.get("set_tweak") == "highlight":
            highlight = a.get("value", True) is True
    return notify, highlight


def valid_action(action: Any) -> bool:
    """What a client may put in a rule's actions."""
    if action in ("notify", "dont_notify", "coalesce"):
        return True
    return isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str)
