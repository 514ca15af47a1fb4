"""federation.relations: parsing m.relates_to, edit validity, what gets bundled."""

from __future__ import annotations

from federation.relations import (
    Relation,
    can_start_thread_from,
    edit_order,
    gets_bundled_aggregations,
    is_valid_edit,
    relation_of,
)

ORIGINAL = {"event_id": "$orig", "room_id": "!r:hs", "sender": "@a:hs", "type": "m.room.message",
            "origin_server_ts": 10, "content": {"body": "hi", "msgtype": "m.text"}}


def edit(**over) -> dict:
    base = {"event_id": "$edit", "room_id": "!r:hs", "sender": "@a:hs", "type": "m.room.message",
            "origin_server_ts": 20,
            "content": {"body": "* hey", "m.new_content": {"body": "hey"},
                        "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}}
    return {**base, **over}


def test_relation_of_follows_the_schema():
    assert relation_of({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}) == Relation("m.thread", "$root")
    assert relation_of({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}}) == \
        Relation("m.annotation", "$t", "👍")
    # Only annotations keep a key, and only a string one.
    assert relation_of({"m.relates_to": {"rel_type": "m.reference", "event_id": "$t", "key": "k"}}).key is None
    assert relation_of({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": 1}}).key is None
    assert relation_of({"m.relates_to": {"rel_type": "org.example", "event_id": "$t"}}).rel_type == "org.example"
    for bad in ({}, {"m.relates_to": []}, {"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}},
                {"m.relates_to": {"rel_type": "m.thread"}}, {"m.relates_to": {"rel_type": 1, "event_id": "$x"}},
                {"m.relates_to": {"rel_type": "m.thread", "event_id": "x"}},
                {"m.relates_to": {"rel_type": "", "event_id": "$x"}},
                {"m.relates_to": {"rel_type": "m.thread", "event_id": "$a\x00b"}},
                {"m.relates_to": {"rel_type": "m.thread\ud800", "event_id": "$x"}},
                {"m.relates_to": {"rel_type": "m." + "x" * 300, "event_id": "$x"}}):
        assert relation_of(bad) is None, bad
    assert relation_of("not a dict") is None  # type: ignore[arg-type]


def test_edit_validity():
    assert is_valid_edit(ORIGINAL, edit())
    assert not is_valid_edit(ORIGINAL, edit(sender="@b:hs"))
    assert not is_valid_edit(ORIGINAL, edit(type="m.sticker"))
    assert not is_valid_edit(ORIGINAL, edit(room_id="!other:hs"))
    assert not is_valid_edit(ORIGINAL, edit(state_key=""))
    assert not is_valid_edit({**ORIGINAL, "state_key": ""}, edit())
    assert not is_valid_edit(ORIGINAL, edit(content={"body": "x", "m.relates_to": {"rel_type": "m.replace",
                                                                                       "event_id": "$orig"}}))
    assert not is_valid_edit(ORIGINAL, edit(content={"m.new_content": {}, "m.relates_to": {
        "rel_type": "m.replace", "event_id": "$other"}}))
    an_edit = {**ORIGINAL, "content": {"m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}}
    assert not is_valid_edit(an_edit, edit())
    # An encrypted edit keeps m.new_content in its ciphertext.
    encrypted = {**ORIGINAL, "type": "m.room.encrypted", "content": {"ciphertext": "..."}}
    assert is_valid_edit(encrypted, edit(type="m.room.encrypted", content={
        "ciphertext": "...", "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}}))


def test_most_recent_edit_and_what_gets_bundled():
    edits = [edit(event_id="$b", origin_server_ts=5), edit(event_id="$a", origin_server_ts=9),
             edit(event_id="$c", origin_server_ts=9)]
    assert max(edits, key=edit_order)["event_id"] == "$c"
    assert gets_bundled_aggregations(ORIGINAL)
    assert gets_bundled_aggregations({**ORIGINAL, "content": {"m.relates_to": {"rel_type": "m.thread",
                                                                               "event_id": "$r"}}})
    assert not gets_bundled_aggregations({**ORIGINAL, "state_key": ""})
    assert not gets_bundled_aggregations(edit())
    assert not gets_bundled_aggregations({**ORIGINAL, "content": {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": "$r", "key": "k"}}})
    assert can_start_thread_from(ORIGINAL["content"])
    assert can_start_thread_from({"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}})  # a reply is fine
    assert not can_start_thread_from({"m.relates_to": {"rel_type": "m.thread", "event_id": "$r"}})
