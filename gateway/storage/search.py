"""The full-text index behind server-side search (``POST /search``, ``room_events``).

Spec: https://spec.matrix.org/latest/client-server-api/#server-side-search

One index row per searchable timeline event: ``content.body`` of ``m.room.message``,
``content.name`` of ``m.room.name``, ``content.topic`` of ``m.room.topic`` (with the
``text/plain`` bodies of its ``m.topic`` block). PostgreSQL keeps a tsvector under a GIN
index; SQLite an FTS5 table whose rowid is the event's stream position (migration 0031
on each engine). Rows are written in the transaction that stores the event, only for
timeline events (outliers, rejected and soft-failed events are not searchable), and go
when a redaction applies or a resync rejects the event.

User input never reaches either engine's query syntax: a search term is split here
into words and quoted phrases (``-word`` excludes, ``or`` between two terms allows
either), and each term is handed over as data: an FTS5 string literal with its quotes
doubled, or a bound parameter of ``phraseto_tsquery``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.events import PDU

from .database import Connection, Database
from .state import _placeholders

#: The searchable keys and the event type each is read from.
KEY_TYPES: Mapping[str, str] = {
    "content.body": "m.room.message",
    "content.name": "m.room.name",
    "content.topic": "m.room.topic",
}
#: PostgreSQL's text search configuration (SQLite's tokenizer stems English words too).
PG_CONFIG = "english"
#: Marks around matched words in highlighted text (taken out of indexed text).
_START, _STOP = "\x02", "\x03"
_UNSAFE = str.maketrans("", "", "\x00" + _START + _STOP)


def searchable_text(pdu: PDU) -> tuple[str, str] | None:
    """(key, text) of an event the index holds, or None (another type, no text)."""
    content = pdu.content
    text: str | None = None
    key = None
    if pdu.type == "m.room.message":
        key, text = "content.body", content.get("body") if isinstance(content.get("body"), str) else None
    elif pdu.type == "m.room.name" and pdu.state_key == "":
        key, text = "content.name", content.get("name") if isinstance(content.get("name"), str) else None
    elif pdu.type == "m.room.topic" and pdu.state_key == "":
        topic = content.get("topic") if isinstance(content.get("topic"), str) else None
        parts = [topic] if topic else []
        block = content.get("m.topic")
        texts = block.get("m.text") if isinstance(block, dict) else None
        for rep in texts if isinstance(texts, list) else ():
            if isinstance(rep, dict) and isinstance(rep.get("body"), str) and rep["body"] != topic \
                    and rep.get("mimetype", "text/plain") == "text/plain":
                parts.append(rep["body"])
        key, text = "content.topic", " ".join(parts)
    if key is None or not text:
        return None
    text = text.translate(_UNSAFE)
    return (key, text) if text.strip() else None


# --- the search term ---------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A word or a quoted phrase, matched as a phrase of the engine's tokens."""

    text: str
    negated: bool = False


@dataclass(frozen=True)
class SearchQuery:
    """All of ``groups`` must match (each group: any of its terms); none of ``excluded``."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...] = ()

    @property
    def positive_terms(self) -> list[Term]:
        return [t for g in self.groups for t in g]


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
#: A term with nothing the tokenizers keep (letters, digits) matches nothing: dropped.
_WORDISH = re.compile(r"[^\W_]")


def parse_search_term(search_term: str) -> SearchQuery | None:
    """The query a search term asks for, or None when it can match nothing (no
    words, or only excluded ones)."""
    items: list[Term | str] = []
    for m in _TOKEN.finditer(search_term.translate(_UNSAFE)):  # never in indexed text either
        negated, phrase, word = m.group(1) == "-", m.group(2), m.group(3)
        if word is not None:
            if word.lower() in ("or", "and"):
                items.append(word.lower())
                continue
            negated, phrase = word.startswith("-") and len(word) > 1, word
            if negated:
                phrase = phrase[1:]
        if _WORDISH.search(phrase):
            items.append(Term(phrase, negated))
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    for item in items:
        if item == "or":
            join_next = bool(groups)
            continue
        if item == "and":
            join_next = False
            continue
        assert isinstance(item, Term)
        if item.negated:
            excluded.append(item)
        elif join_next:
            groups[-1].append(item)
        else:
            groups.append([item])
        join_next = False
    if not groups:
        return None
    return SearchQuery(tuple(tuple(g) for g in groups), tuple(excluded))


def room_token(room_id: str) -> str:
    """A room as one token of SQLite's ``room`` column: 'r', its UTF-8 in hex, '0' (a
    digit last: no stemming rule applies). The migration writes the same in SQL."""
    return "r" + room_id.encode("utf-8").hex() + "0"


def _fts5_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts5_match(query: SearchQuery, room_ids: Sequence[str] | None = None) -> str:
    """The FTS5 MATCH expression: every term an FTS5 string (a phrase, quotes doubled)
    matched in ``value``; with ``room_ids``, only in those rooms."""
    expr = " AND ".join("(" + " OR ".join(_fts5_string(t.text) for t in g) + ")" for g in query.groups)
    for t in query.excluded:
        expr = f"({expr}) NOT {_fts5_string(t.text)}"
    expr = f"value : ({expr})"
    if room_ids is not None:
        expr += " AND room : (" + " OR ".join(_fts5_string(room_token(r)) for r in room_ids) + ")"
    return expr


def tsquery_sql(query: SearchQuery, arg) -> str:
    """A tsquery expression over bound parameters (``arg(value)`` binds one and returns
    its placeholder)."""
    def phrase(term: Term) -> str:
        return f"phraseto_tsquery('{PG_CONFIG}', {arg(term.text)})"

    parts = ["(" + " || ".join(phrase(t) for t in g) + ")" for g in query.groups]
    parts += [f"!!{phrase(t)}" for t in query.excluded]
    return "(" + " && ".join(parts) + ")"


# --- the store ---------------------------------------------------------------------


@dataclass(frozen=True)
class RoomScope:
    """Where to search in one room: positions in ``ranges`` ([low, high) pairs, high
    None for no end; None: everywhere), and every backfilled (negative) position."""

    room_id: str
    ranges: tuple[tuple[int, int | None], ...] | None = None


@dataclass(frozen=True)
class SearchableRoom:
    """A room a user may search: their membership now and its position, and the
    (position, type, event ID or None) changes to the room's history visibility and
    their membership, oldest first."""

    membership: str
    position: int
    changes: list[tuple[int, str, str | None]]


@dataclass(frozen=True)
class SearchHit:
    event_id: str
    room_id: str
    stream_ordering: int
    rank: float


async def index_events(conn: Connection, events: Iterable[tuple[PDU, int]]) -> None:
    """Inside the transaction that stores them: index the searchable ones of timeline
    events ((pdu, stream_ordering) pairs)."""
    rows = []
    for pdu, position in events:
        found = searchable_text(pdu)
        if found is not None:
            rows.append((position, found[1], pdu.event_id, pdu.room_id, pdu.sender, found[0]))
    if not rows:
        return
    if conn.engine == "sqlite":
        await conn.executemany(
            "INSERT OR REPLACE INTO event_search (rowid, value, room, event_id, room_id, sender, key)"
            " VALUES ($1, $2, $7, $3, $4, $5, $6)", [(*r, room_token(r[3])) for r in rows])
    else:
        await conn.executemany(
            "INSERT INTO event_search (stream_ordering, vector, event_id, room_id, sender, key)"
            f" VALUES ($1, to_tsvector('{PG_CONFIG}', $2), $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            rows)


async def unindex_events(conn: Connection, event_ids: Sequence[str]) -> None:
    """Take events out of the index (a redaction applied, or the event was rejected)."""
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return
    if conn.engine == "sqlite":  # by rowid: FTS5 finds an unindexed column's value only by scanning
        await conn.execute(
            "DELETE FROM event_search WHERE rowid IN"
            f" (SELECT stream_ordering FROM events WHERE event_id IN ({_placeholders(len(ids))}))", *ids)
    else:
        await conn.execute(f"DELETE FROM event_search WHERE event_id IN ({_placeholders(len(ids))})", *ids)


class SearchStore:
    def __init__(self, db: Database):
        self.db = db

    def _where(self, query: SearchQuery, scopes: Sequence[RoomScope], keys: Sequence[str],
               senders: Sequence[str] | None, not_senders: Sequence[str], ignored: Sequence[str]
               ) -> tuple[list[str], list[Any], str]:
        """The shared conditions (match, rooms and positions, keys, senders; messages of
        ``ignored`` users left out, not their names and topics), their arguments, and the
        rank expression."""
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        sqlite = self.db.engine == "sqlite"
        pos = "rowid" if sqlite else "stream_ordering"
        ranged = [s for s in scopes if s.ranges is not None]
        if sqlite:  # the rooms are in the MATCH: only ranges need a room_id test, when rooms differ
            where = [f"event_search MATCH {arg(fts5_match(query, [s.room_id for s in scopes]))}"]
            rank = "-rank"  # bm25() with the room column weighing nothing; better matches lower
            by_room = bool(ranged) and len(scopes) > 1
        else:
            tsq = tsquery_sql(query, arg)
            where = [f"vector @@ {tsq}"]
            rank = f"ts_rank_cd(vector, {tsq})"
            by_room = True
        rooms = []
        anywhere = [s.room_id for s in scopes if s.ranges is None]
        if anywhere and by_room:
            rooms.append(f"room_id IN ({', '.join(arg(r) for r in anywhere)})")
        elif anywhere:
            rooms.append("TRUE")
        for s in ranged:
            spans = [f"{pos} < 0"]
            for low, high in s.ranges or ():
                span = f"{pos} >= {arg(low)}"
                spans.append(span if high is None else f"({span} AND {pos} < {arg(high)})")
            spans_sql = " OR ".join(spans)
            rooms.append(f"(room_id = {arg(s.room_id)} AND ({spans_sql}))" if by_room else f"({spans_sql})")
        where.append("(" + " OR ".join(rooms) + ")")
        if set(keys) != set(KEY_TYPES):
            where.append(f"key IN ({', '.join(arg(k) for k in keys)})")
        if senders is not None:
            where.append(f"sender IN ({', '.join(arg(s) for s in senders)})")
        if not_senders:
            where.append(f"sender NOT IN ({', '.join(arg(s) for s in not_senders)})")
        if ignored:
            where.append(f"NOT (key = 'content.body' AND sender IN ({', '.join(arg(s) for s in ignored)}))")
        return where, args, rank

    async def search(self, query: SearchQuery, *, scopes: Sequence[RoomScope], keys: Sequence[str],
                     senders: Sequence[str] | None = None, not_senders: Sequence[str] = (),
                     ignored: Sequence[str] = (), order: str, after: SearchHit | None = None,
                     limit: int) -> list[SearchHit]:
        """One page of matches: ``order`` "recent" (newest position first) or "rank"
        (best first, then newest), continuing after the match ``after``."""
        if not scopes or not keys or (senders is not None and not senders):
            return []
        where, args, rank = self._where(query, scopes, keys, senders, not_senders, ignored)
        sqlite = self.db.engine == "sqlite"
        pos = "rowid" if sqlite else "stream_ordering"
        if order == "recent":
            if after is not None:
                args.append(after.stream_ordering)
                where.append(f"{pos} < ${len(args)}")
            order_sql = f"{pos} DESC"
        else:
            if after is not None:  # row values compare in order: rank, then position
                args += [after.rank, after.stream_ordering]
                where.append(f"({'-bm25(event_search, 1.0, 0.0)' if sqlite else rank}, {pos})"
                             f" < (${len(args) - 1}, ${len(args)})")
            order_sql = "rank, rowid DESC" if sqlite else f"{rank} DESC, stream_ordering DESC"
        args.append(limit)
        rows = await self.db.fetch(
            f"SELECT event_id, room_id, {pos}, {rank} FROM event_search WHERE {' AND '.join(where)}"
            f" ORDER BY {order_sql} LIMIT ${len(args)}", *args)
        return [SearchHit(r[0], r[1], int(r[2]), float(r[3])) for r in rows]

    async def count(self, query: SearchQuery, *, scopes: Sequence[RoomScope], keys: Sequence[str],
                    senders: Sequence[str] | None = None, not_senders: Sequence[str] = (),
                    ignored: Sequence[str] = ()) -> int:
        """How many index rows match (before the per-event visibility check)."""
        if not scopes or not keys or (senders is not None and not senders):
            return 0
        where, args, _ = self._where(query, scopes, keys, senders, not_senders, ignored)
        return int(await self.db.fetchval(f"SELECT count(*) FROM event_search WHERE {' AND '.join(where)}", *args))

    async def highlights(self, query: SearchQuery, texts: Mapping[int, str]) -> set[str]:
        """The words of ``texts`` (indexed text by stream position) the query matched,
        as each engine's stemming found them."""
        if not texts:
            return set()
        if self.db.engine == "sqlite":
            positions = list(texts)
            rows = await self.db.fetch(
                f"SELECT highlight(event_search, 0, char(2), char(3)) FROM event_search"
                f" WHERE event_search MATCH $1 AND rowid IN ({_placeholders(len(positions), 2)})",
                fts5_match(SearchQuery(query.groups)), *positions)
        else:
            args: list[Any] = []

            def arg(value: Any) -> str:
                args.append(value)
                return f"${len(args)}"

            tsq = tsquery_sql(SearchQuery(query.groups), arg)
            texts_arg = arg([t.translate(_UNSAFE) for t in texts.values()])
            rows = await self.db.fetch(
                f"SELECT ts_headline('{PG_CONFIG}', t, {tsq}, 'StartSel=\"{_START}\", StopSel=\"{_STOP}\","
                f" HighlightAll=true') FROM unnest({texts_arg}::text[]) AS t", *args)
        found: set[str] = set()
        for (marked,) in rows:
            for span in re.findall(f"{_START}(.*?){_STOP}", marked or "", flags=re.S):
                found.update(w for w in span.split() if w)
        return found

    async def searchable_rooms(self, user_id: str) -> dict[str, SearchableRoom]:
        """The rooms ``user_id`` is joined to, has left or was banned from (not forgotten
        ones), each with the changes to its history visibility and to the user's
        membership, in one query."""
        rows = await self.db.fetch(
            "SELECT m.room_id, m.membership, m.stream_ordering, d.type, d.event_id, d.stream_ordering"
            " FROM room_memberships m LEFT JOIN current_state_deltas d ON d.room_id = m.room_id"
            " AND ((d.type = 'm.room.member' AND d.state_key = m.user_id)"
            " OR (d.type = 'm.room.history_visibility' AND d.state_key = ''))"
            " WHERE m.user_id = $1 AND m.membership IN ('join', 'leave', 'ban') AND m.forgotten = FALSE", user_id)
        out: dict[str, SearchableRoom] = {}
        for r in rows:
            room = out.get(r[0])
            if room is None:
                room = out[r[0]] = SearchableRoom(r[1], int(r[2]), [])
            if r[3] is not None:
                room.changes.append((int(r[5]), r[3], r[4]))
        for room in out.values():
            room.changes.sort(key=lambda c: c[0])
        return out

