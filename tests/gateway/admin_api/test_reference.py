"""docs/admin-api.md: its route table is the routes the server serves, and what it tells
an operator (tokens, errors, the shared-secret script) holds against a running server."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from gateway.admin_api.reference import (BEGIN, DESCRIPTIONS, END, REFRESH_COMMAND, admin_routes, render_table,
                                         update_document)
from tests.support.gateway_process import ROOT, gateway_process

DOC = os.path.join(ROOT, "docs", "admin-api.md")
SECRET = "admin-doc-shared-secret"


@pytest.fixture(scope="module")
def routes():
    return admin_routes()


def _doc() -> str:
    with open(DOC, encoding="utf-8") as f:
        return f.read()


def test_the_documented_routes_are_the_served_routes(routes):
    text = _doc()
    assert update_document(text, render_table(routes)) == text, \
        f"docs/admin-api.md lists other admin routes than the server serves; refresh it with:\n    {REFRESH_COMMAND}"


def test_the_route_list_comes_from_the_app(routes):
    by_key = {f"{m} {p}": public for m, p, public in routes}
    # Regex alternatives are expanded; the sub-app prefix is there; @public handlers are marked.
    assert {"GET /_synapse/admin/v1/event_reports", "GET /_synapse/admin/v1/user_reports",
            "GET /_matrix/client/v3/admin/whois/{user_id}", "DELETE /_synapse/admin/v2/rooms/{room_id}"} <= set(by_key)
    assert by_key["POST /_synapse/admin/v1/register"] is True
    assert by_key["GET /_synapse/admin/v2/users"] is False
    assert not any("/_matrix/client/v3/sync" in k for k in by_key)


def test_every_description_names_a_served_route(routes):
    served = {f"{m} {p}" for m, p, _ in routes}
    stale = sorted(set(DESCRIPTIONS) - served)
    assert not stale, f"gateway/admin_api/reference.py describes routes nobody serves: {stale}"


def test_the_generated_part_is_kept_between_its_markers():
    text = f"intro\n{BEGIN}\nold table\n{END}\noutro\n"
    assert update_document(text, "| new |") == f"intro\n{BEGIN}\n| new |\n{END}\noutro\n"
    with pytest.raises(ValueError):
        update_document("no markers", "| new |")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = {"server_name": "admin.test", "registration_shared_secret": SECRET,
              "listeners": [{"port": 0, "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"]}]}]}
    with gateway_process(tmp_path_factory.mktemp("admin-doc"), config) as port:
        yield f"http://127.0.0.1:{port}"


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_the_shared_secret_script_of_the_doc_registers_a_user(server):
    script = re.search(r"^```python\n(.*?)^```", _doc(), re.MULTILINE | re.DOTALL).group(1)
    script = script.replace("http://127.0.0.1:8008", server).replace("the registration_shared_secret", SECRET)
    for user, admin in (("bob", "False"), ("root", "True")):
        run = script.replace('"bob"', f'"{user}"').replace(
            '"another long password", False', f'"another long password", {admin}')
        r = subprocess.run([sys.executable, "-c", run], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        answer = ast.literal_eval(r.stdout.strip())  # the script prints the answer's dict
        assert answer["user_id"] == f"@{user}:admin.test" and answer["access_token"]
        status, body = _get(f"{server}/_synapse/admin/v1/server_version", answer["access_token"])
        # What the doc says: an admin gets the API, anyone else 403 M_FORBIDDEN.
        if admin == "True":
            assert status == 200 and body["server_version"].startswith("Gateway"), body
        else:
            assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body


def test_what_the_doc_says_about_tokens_and_unknown_paths(server):
    status, body = _get(f"{server}/_synapse/admin/v2/users")
    assert (status, body["errcode"]) == (401, "M_MISSING_TOKEN"), body
    status, body = _get(f"{server}/_synapse/admin/v1/no_such_api")
    assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED"), body
