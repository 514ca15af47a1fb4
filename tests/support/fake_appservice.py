"""A scriptable application service on loopback for tests: it records every request our
server makes (path, query, Authorization, body) and answers what the test told it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from aiohttp import web

from tests.conftest import free_port


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any
    #: False for a transaction this service refused (answered 500).
    ok: bool = True


@dataclass
class FakeAppService:
    port: int
    hs_token: str
    requests: list[Recorded] = field(default_factory=list)
    #: path -> (status, JSON body) or a function of the request returning one; default 200 {}.
    answers: dict[str, Any] = field(default_factory=dict)
    #: Transactions answered with 500 before the next ones succeed.
    fail_transactions: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def transactions(self) -> list[tuple[str, dict]]:
        """(txn ID, body) of every transaction request, failed ones included, in order."""
        return [(r.path.rsplit("/", 1)[1], r.body) for r in self.requests if "/transactions/" in r.path]

    def events(self) -> list[dict]:
        """The events of the acknowledged transactions, in order (each transaction once)."""
        seen, out = set(), []
        for r in self.requests:
            txn_id = r.path.rsplit("/", 1)[1]
            if "/transactions/" in r.path and r.ok and txn_id not in seen:
                seen.add(txn_id)
                out += r.body.get("events", [])
        return out

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20) -> Any:
        async with self.changed:
            return await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        rec = Recorded(request.method, request.path, dict(request.query), request.headers.get("Authorization"), body)
        answer: Any = (200, {})
        if "/transactions/" in request.path and self.fail_transactions > 0:
            self.fail_transactions -= 1
            answer = (500, {"errcode": "M_UNKNOWN", "error": "down for maintenance"})
            rec.ok = False
        elif request.path in self.answers:
            answer = self.answers[request.path]
            if callable(answer):
                answer = await answer(rec)
        self.requests.append(rec)
        async with self.changed:
            self.changed.notify_all()
        status, payload = answer
        return web.json_response(payload, status=status)


@contextlib.asynccontextmanager
async def fake_appservice(hs_token: str) -> AsyncIterator[FakeAppService]:
    service = FakeAppService(free_port(), hs_token)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", service._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", service.port).start()
    try:
        yield service
    finally:
        await runner.cleanup()
