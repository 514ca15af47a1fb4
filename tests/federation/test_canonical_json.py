"""Canonical JSON and unpadded Base64, against the spec's own examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.canonical_json import (
    parse_json,
    CanonicalJSONError,
    check_strict_values,
    decode_base64,
    encode_base64,
    encode_base64_urlsafe,
    encode_canonical_json,
)

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "content" / "appendices.md"


def _spec_examples() -> list[tuple[str, str]]:
    """(input, expected) pairs from the appendix "Canonical JSON" examples."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("#### Examples"):text.index("### Signing Details")]
    blocks = re.findall(r"```json\n(.*?)```", section, re.S)
    assert len(blocks) % 2 == 0
    return [(blocks[i], blocks[i + 1].strip()) for i in range(0, len(blocks), 2)]


EXAMPLES = _spec_examples()


def test_spec_has_the_examples_we_expect():
    assert len(EXAMPLES) >= 10
    assert any("1e10" in src for src, _ in EXAMPLES)


@pytest.mark.parametrize("source, expected", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_spec_examples(source, expected):
    assert encode_canonical_json(json.loads(source)) == expected.encode("utf-8")


def test_float_forms():
    assert encode_canonical_json({"a": 1e10, "b": -0.0, "c": 2.0}) == b'{"a":10000000000,"b":0,"c":2}'
    assert encode_canonical_json([1.5]) == b"[1.5]"
    for bad in (float("nan"), float("inf")):
        with pytest.raises(CanonicalJSONError):
            encode_canonical_json({"x": bad})
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json({"x": object()})


def test_escapes():
    # Control characters as \uXXXX (lower-case hex), the short forms where JSON has them.
    assert encode_canonical_json({"a": "\x01\n\"\\"}) == b'{"a":"\\u0001\\n\\"\\\\"}'


def test_strict_values():
    check_strict_values({"a": [1, -(2**53) + 1, 2**53 - 1, True, None, "s"]})
    for bad in ({"a": 2**53}, {"a": -(2**53)}, {"a": [1.0]}):
        with pytest.raises(CanonicalJSONError):
            check_strict_values(bad)


def test_unpadded_base64():
    assert encode_base64(b"") == ""
    assert encode_base64(b"f") == "Zg"
    assert encode_base64(b"fo") == "Zm8"
    assert encode_base64(b"foo") == "Zm9v"
    assert encode_base64(b"\xfb\xff") == "+/8"
    assert encode_base64_urlsafe(b"\xfb\xff") == "-_8"
    assert decode_base64("Zm8") == decode_base64("Zm8=") == b"fo"
    assert decode_base64("-_8") == decode_base64("+/8") == b"\xfb\xff"
    for bad in ("Z", "Zm9v!", "@@@@"):
        with pytest.raises(ValueError):
            decode_base64(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_round_trip(value):
    encoded = encode_canonical_json(value)
    assert json.loads(encoded) == value
    # Canonical: re-encoding the parsed form gives the same bytes.
    assert encode_canonical_json(json.loads(encoded)) == encoded


@given(st.binary(max_size=64))
def test_base64_round_trip(data):
    assert decode_base64(encode_base64(data)) == data
    assert decode_base64(encode_base64_urlsafe(data)) == data


stdlib_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)


@given(stdlib_values)
def test_fast_encoder_matches_the_standard_library(value):
    """orjson does the work; its output must be the standard library's, byte for byte
    (including integers beyond 64 bits, which fall back to the standard library)."""
    reference = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    assert encode_canonical_json(value) == reference
    assert encode_canonical_json(value, assume_no_floats=True) == reference


def test_non_integral_floats_are_written_as_python_writes_them():
    # Old rooms (1-5) may carry floats; other servers hash them with Python's repr.
    assert encode_canonical_json({"a": 1e-07, "b": 2.5, "c": 1e22}) == b'{"a":1e-07,"b":2.5,"c":10000000000000000000000}'


def test_lone_surrogates_are_refused():
    with pytest.raises(CanonicalJSONError):
        encode_canonical_json({"a": "\ud800"})


def test_parse_json_refuses_what_is_not_json():
    assert parse_json(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        with pytest.raises(ValueError, match="nested too deeply"):
            parse_json(raw)
    for raw in (b"{nope", b"\xff\xfe", b'{"a": NaN}', b"[Infinity]"):
        with pytest.raises(ValueError):
            parse_json(raw)
    assert parse_json(b"[NaN]", allow_constants=True)[0] != parse_json(b"[NaN]", allow_constants=True)[0]


def test_iter_list_items_reads_the_lists_an_item_at_a_time_with_their_text():
    import json as _json

    from federation.canonical_json import iter_list_items

    text = ('{"origin": "x", "auth_chain": [ {"a": [1, {"b": "]},{\\""}]} , {"c": 2} ],'
            ' "pdus":[], "other": {"pdus": [1]}, "pdus_2": 3, "n": NaN} ')
    items = list(iter_list_items(text, ("auth_chain", "pdus")))
    assert [(k, v) for k, v, _ in items] == [("auth_chain", {"a": [1, {"b": ']},{"'}]}), ("auth_chain", {"c": 2})]
    assert [_json.loads(raw) for _, _, raw in items] == [v for _, v, _ in items]
    assert list(iter_list_items(" { } ", ("pdus",))) == []
    assert list(iter_list_items('{"pdus": {"not": "a list"}}', ("pdus",))) == []


@pytest.mark.parametrize("text", ["[]", "", '{"a":1,}', '{"pdus":[1 2]}', '{"a":1} x', '{"pdus":[1,]}',
                                  '{"pdus":[1', '{"a":1', '{"pdus":' + "[" * 100000 + "]" * 100000 + "}"])
def test_iter_list_items_refuses_what_is_not_one_json_object(text):
    from federation.canonical_json import iter_list_items

    with pytest.raises(ValueError):
        list(iter_list_items(text, ("pdus",)))
