"""A minimal Client-Server API user for interop tests, and /sync predicates."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Callable
from urllib.parse import quote

import aiohttp
from yarl import URL

_txn = itertools.count()

#: A /sync filter that lazy-loads members: a client using it sees a room joined with
#: partial state (faster joins) at once; others only once its state is complete.
LAZY_MEMBERS = '{"room": {"state": {"lazy_load_members": true}}}'


class Client:
    """A minimal Client-Server API user (one of each server's users)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str, user_id: str):
        self.s, self.base, self.token, self.user_id = session, base, token, user_id
        self.since: str | None = None
        #: The filter of ``sync_until`` (JSON), e.g. ``LAZY_MEMBERS`` to see rooms while
        #: their state is partial.
        self.sync_filter: str | None = None

    def url(self, path: str) -> URL:
        return URL(f"{self.base}/_matrix/client/v3{path}", encoded=True)

    async def call(self, method: str, path: str, body: Any = None, *, params: Any = None,
                   expect: int = 200) -> Any:
        async with self.s.request(method, self.url(path), json=body, params=params,
                                  headers={"Authorization": f"Bearer {self.token}"}) as r:
            data = await r.json()
            assert r.status == expect, (method, path, r.status, data)
            return data

    async def send_text(self, room_id: str, text: str) -> str:
        body = await self.call("PUT", f"/rooms/{q(room_id)}/send/m.room.message/t{next(_txn)}",
                               {"msgtype": "m.text", "body": text})
        return body["event_id"]

    async def sync_until(self, predicate: Callable[[dict], Any], timeout: float = 60) -> Any:
        """Long-poll /sync (incrementally) until ``predicate(response)`` is truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            params = {"timeout": "2000"}
            if self.since:
                params["since"] = self.since
            if self.sync_filter:
                params["filter"] = self.sync_filter
            body = await self.call("GET", "/sync", params=params)
            self.since = body["next_batch"]
            found = predicate(body)
            if found:
                return found
            assert asyncio.get_running_loop().time() < deadline, f"{self.user_id}: condition never met in /sync"


async def register_user(session: aiohttp.ClientSession, base: str, name: str) -> Client:
    """A new user of one of our servers (open registration, dummy auth)."""
    async with session.post(f"{base}/_matrix/client/v3/register", json={
            "username": name, "password": f"{name}-pass", "auth": {"type": "m.login.dummy"}}) as r:
        body = await r.json()
        assert r.status == 200, body
    return Client(session, base, body["access_token"], body["user_id"])


def q(value: str) -> str:
    return quote(value, safe="")


def timeline_bodies(room_id: str) -> Callable[[dict], list[str]]:
    def get(body: dict) -> list[str]:
        events = body.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
        return [e["content"].get("body") for e in events if e["type"] == "m.room.message"]
    return get


def has_text(room_id: str, text: str) -> Callable[[dict], bool]:
    return lambda body: text in timeline_bodies(room_id)(body)


def member_event(room_id: str, user_id: str, membership: str, section: str = "join") -> Callable[[dict], Any]:
    def get(body: dict) -> Any:
        room = body.get("rooms", {}).get(section, {}).get(room_id, {})
        for e in room.get("timeline", {}).get("events", []) + room.get("state", {}).get("events", []):
            if e["type"] == "m.room.member" and e.get("state_key") == user_id \
                    and e["content"].get("membership") == membership:
                return e
        return None
    return get


def invited_to(room_id: str) -> Callable[[dict], Any]:
    return lambda body: body.get("rooms", {}).get("invite", {}).get(room_id)


def left(room_id: str) -> Callable[[dict], Any]:
    return lambda body: room_id in body.get("rooms", {}).get("leave", {})


def knocked(room_id: str) -> Callable[[dict], Any]:
    return lambda body: body.get("rooms", {}).get("knock", {}).get(room_id)


async def accept_knock(member: Client, knocker: Client, room_id: str, text: str) -> None:
    """``member`` accepts ``knocker``'s knock with an invite; the knocker joins and
    says ``text``, which the member sees."""
    await member.call("POST", f"/rooms/{q(room_id)}/invite", {"user_id": knocker.user_id})
    await knocker.sync_until(invited_to(room_id))
    await knocker.call("POST", f"/join/{q(room_id)}", {})
    await member.sync_until(member_event(room_id, knocker.user_id, "join"))
    await knocker.send_text(room_id, text)
    await member.sync_until(has_text(room_id, text))
