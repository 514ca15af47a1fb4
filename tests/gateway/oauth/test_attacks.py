"""Attacks on the OAuth 2.0 API: redirect URIs that browsers and our parser read differently,
session fixation on our pages, guessing device user codes."""

from __future__ import annotations

import pytest

from gateway.oauth.clients import ClientMetadataError, redirect_uri_allowed, validate_client_metadata

from .conftest import new_request


def _refused(body) -> ClientMetadataError:
    with pytest.raises(ClientMetadataError) as e:
        validate_client_metadata(body)
    return e.value


# --- redirect URIs: what the browser will open is what we checked ---------------------------------

@pytest.mark.parametrize("uri", [
    "http://evil.example\\@127.0.0.1:1234/cb",  # a browser: host evil.example
    "http://evil.example@127.0.0.1:1234/cb",     # userinfo at use, never registered
    "http://127.0.0.1:1234@evil.example/cb",
    "http://127.0.0.1:1234\\@evil.example/cb",
    "http://127.0.0.1:12\t34/cb",                 # urllib drops the tab, so would the browser: refuse
    "http://127.0.0.1:1234/cb\\..\\x",
])
def test_loopback_port_matching_takes_only_host_and_port(uri):
    assert not redirect_uri_allowed(uri, ["http://127.0.0.1/cb"])
    assert redirect_uri_allowed("http://127.0.0.1:1234/cb", ["http://127.0.0.1/cb"])


async def test_authorize_never_redirects_to_a_backslash_authority(client, hs):
    """The loopback rule let "http://evil.example\\@127.0.0.1:1234/cb" through (urllib: host
    127.0.0.1); a browser goes to evil.example with the code, or, for a refused request,
    with no user interaction at all."""
    resp = await client.post("/_gateway/oauth2/register", json={
        "application_type": "native", "client_uri": "https://app.example.org/", "client_name": "Native",
        "redirect_uris": ["http://127.0.0.1/cb"]})
    assert resp.status == 201
    client_id = (await resp.json())["client_id"]
    req = new_request(client_id, redirect_uri="http://evil.example\\@127.0.0.1:1234/cb")
    # A bad scope: the error would go straight back to the redirect URI.
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(scope="nonsense"),
                            allow_redirects=False)
    assert resp.status == 400 and "Location" not in resp.headers
    req = new_request(client_id, redirect_uri="http://127.0.0.1:1234/cb")
    resp = await client.get("/_gateway/oauth2/authorize", params=req.query(scope="nonsense"),
                            allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"].startswith("http://127.0.0.1:1234/cb?error=invalid_scope")


@pytest.mark.parametrize("uri", [
    "https://evil.example\\.app.example.org/cb",  # a browser: host evil.example, path /.app.example.org/cb
    "https://evil.example%2f.app.example.org/cb",
    "https://evil.example%5c.app.example.org/cb",
    "https://app.example.org/caf\u00e9",
    "https://\u0430pp.example.org/cb",  # Cyrillic a
])
def test_web_redirect_uri_must_be_plain_for_browsers(uri):
    error = _refused({"client_uri": "https://app.example.org/", "redirect_uris": [uri]})
    assert error.error == "invalid_redirect_uri"


def test_metadata_uris_cannot_claim_the_client_host_with_a_backslash():
    """The consent screen names the client_uri host; logo and policy links must be there."""
    for key in ("logo_uri", "policy_uri", "tos_uri"):
        error = _refused({"client_uri": "https://app.example.org/", "redirect_uris": ["https://app.example.org/cb"],
                          key: "https://evil.example\\.app.example.org/x"})
        assert error.error == "invalid_client_metadata"
    error = _refused({"client_uri": "https://evil.example\\.app.example.org/",
                      "redirect_uris": ["https://evil.example\\.app.example.org/cb"]})
    assert error.error == "invalid_client_metadata"


@pytest.mark.parametrize("client_uri,uri", [("https://javascript/", "javascript:alert(document.domain)//"),
                                            ("https://data/", "data:text/html,<script>alert(1)</script>"),
                                            ("https://vbscript/", "vbscript:msgbox")])
def test_private_use_scheme_is_a_reversed_domain(client_uri, uri):
    error = _refused({"application_type": "native", "client_uri": client_uri, "redirect_uris": [uri]})
    assert error.error == "invalid_redirect_uri"
    # A real reversed domain stays fine.
    assert validate_client_metadata({"application_type": "native", "client_uri": "https://app.example.org/",
                                     "redirect_uris": ["org.example.app:/cb"]})["redirect_uris"]
