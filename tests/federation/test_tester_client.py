"""The client-side checks over plain answers: the spec's discovery verdicts, CORS, login."""

from __future__ import annotations

import json

import pytest

from federation.tester_client import check_client_well_known, check_preflight, check_support, summarize_login


@pytest.mark.parametrize("status, body, result", [
    (404, b"", "IGNORE"),
    (500, b"", "FAIL_PROMPT"),
    (200, b"", "FAIL_PROMPT"),
    (200, b"[1]", "FAIL_PROMPT"),
    (200, b'{"m.homeserver": {}}', "FAIL_PROMPT"),
    (200, b'{"m.homeserver": {"base_url": "matrix.example.com"}}', "FAIL_ERROR"),
    (200, b'{"m.homeserver": {"base_url": "https://m.example.com"}, "m.identity_server": {}}', "FAIL_PROMPT"),
    (200, b'{"m.homeserver": {"base_url": "https://m.example.com/"}}', "ok"),
    (None, None, "unreachable"),
])
def test_discovery_verdicts(status, body, result):
    assert check_client_well_known(status, body, "refused")["Result"] == result


def test_preflight_wildcards():
    good = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST",
            "Access-Control-Allow-Headers": "Authorization, Content-Type"}
    assert check_preflight(204, good)["OK"]
    star = {**good, "Access-Control-Allow-Methods": "*", "Access-Control-Allow-Headers": "*"}
    assert check_preflight(204, star)["Missing"] == ["Authorization in Access-Control-Allow-Headers"]
    assert check_preflight(404, {})["Missing"][:2] == ["a 2xx answer to OPTIONS (got 404)",
                                                        "Access-Control-Allow-Origin"]


def test_support_and_login():
    ok = json.dumps({"contacts": [{"matrix_id": "@admin:example.org", "role": "m.role.admin"}],
                     "support_page": "https://example.org/help"}).encode()
    assert check_support(200, ok, None)["Result"] == "ok"
    assert check_support(200, b"{}", None)["Problems"] == ["it needs at least one contact or a support_page"]
    flows = json.dumps({"flows": [{"type": "m.login.password"}]}).encode()
    metadata = json.dumps({"issuer": "https://a.example/", "authorization_endpoint": "https://a.example/auth"}).encode()
    both = summarize_login(200, flows, 200, metadata, element_x_sync=True)
    assert both["legacy"] == ["m.login.password"] and both["oauth"] is True and "OAuth 2.0" in both["ElementX"]
    password = summarize_login(200, flows, 404, b"", element_x_sync=False)
    assert password["oauth"] is False and "password form" in password["ElementX"]
    assert "simplified sliding sync" in password["ElementX"]
