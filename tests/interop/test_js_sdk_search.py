"""matrix-js-sdk 43 (the SDK inside Element Web), driven from node against our server:
its searchRoomEvents and backPaginateRoomEventsSearch (tests/interop/js/search.mjs)."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway_server import running_gateway
from tests.support.js_sdk import OPEN_REGISTRATION, register_users, run_scenario
from tests.support.tls import TestCA

SCENARIO = Path(__file__).with_name("js") / "search.mjs"


async def test_search_through_matrix_js_sdk(tmp_path):
    async with running_gateway(tmp_path, TestCA(tmp_path / "ca"), OPEN_REGISTRATION) as gw:
        users = await register_users(gw.client_url, "alice", "bob")
        result = await run_scenario(SCENARIO, base_url=gw.client_url, args=users)

    sent = result["sent"]
    # Newest first, ten a page, every message once; "needles" found "needle" (stemming).
    assert result["ids"] == list(reversed(sent))
    assert result["pages"] == [10, 20, 25] and result["count"] == 25
    assert "needle" in result["highlights"]
    assert all(isinstance(r, (int, float)) for r in result["ranks"])
    # One event of context each side, the result in the middle.
    assert result["newestTimeline"] == [sent[23], sent[24], result["last"]] and result["newestIndex"] == 1
    # Without the room filter, the other room's message is found too.
    assert result["everywhere"] == 26
