"""matrix-js-sdk 43 (the SDK inside Element Web), driven from node against our server:
edits, threads, reactions and references sent through the SDK's own APIs, and what
fresh clients show after their initial sync (tests/interop/js/relations.mjs)."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway_server import running_gateway
from tests.support.js_sdk import OPEN_REGISTRATION, register_users, run_scenario
from tests.support.tls import TestCA

SCENARIO = Path(__file__).with_name("js") / "relations.mjs"


async def test_relations_through_matrix_js_sdk(tmp_path):
    async with running_gateway(tmp_path, TestCA(tmp_path / "ca"), OPEN_REGISTRATION) as gw:
        users = await register_users(gw.client_url, "alice", "bob")
        result = await run_scenario(SCENARIO, base_url=gw.client_url, args=users)

    ids = result["ids"]
    assert result["duplicate"]["errcode"] == "M_DUPLICATE_ANNOTATION" and result["duplicate"]["httpStatus"] == 400
    assert result["live"]["body"] == "hello, edited twice"
    # The fresh client's initial sync: the edit is applied from the bundle.
    edited = result["edited"]
    assert edited["inTimeline"] is True
    assert edited["body"] == "hello, edited twice"
    assert edited["replacingEventId"] == ids["edit2"] and edited["replacingEvent"] == ids["edit2"]
    assert edited["references"] == [ids["reference"]]
    assert result["bundled"] == {"count": 3, "latest": ids["replies"][2], "participated": True}
    # The thread list and the thread.
    assert result["listed"] == [ids["root"]] and result["mine"] == [ids["root"]]
    thread = result["thread"]
    assert thread["length"] == 3 and thread["latest"] == ids["replies"][2] and thread["participated"] is True
    assert [e for e in thread["events"] if e in ids["replies"]] == ids["replies"]
    assert sorted(result["reactions"]) == sorted([["@alice:" + gw.server_name, "👍"],
                                                   ["@bob:" + gw.server_name, "👍"]])
    assert result["edits"] == [ids["edit2"], ids["edit1"]]
    # Paginated back with /messages: edited too.
    assert result["scrolled"] == {"body": "hello, edited twice", "replacingEventId": ids["edit2"]}
