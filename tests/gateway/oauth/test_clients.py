"""Client metadata and redirect URI rules (spec "Client metadata", "Redirect URI validation")."""

from __future__ import annotations

import pytest

from gateway.oauth.clients import ClientMetadataError, localised, redirect_uri_allowed, validate_client_metadata


def web(**kw):
    return {"client_uri": "https://example.com/", "redirect_uris": ["https://example.com/callback"], **kw}


def native(*uris, **kw):
    return {"application_type": "native", "client_uri": "https://example.com/", "redirect_uris": list(uris), **kw}


def refused(body, error="invalid_redirect_uri", **kw) -> str:
    with pytest.raises(ClientMetadataError) as e:
        validate_client_metadata(body, **kw)
    assert e.value.error == error, e.value
    return e.value.description


@pytest.mark.parametrize("uri", ["https://example.com/callback", "https://app.example.com/callback",
                                 "https://example.com:5173/?query=value"])
def test_web_redirect_uris_the_spec_accepts(uri):
    assert validate_client_metadata(web(redirect_uris=[uri]))["redirect_uris"] == [uri]


@pytest.mark.parametrize("uri", ["https://example.com/callback#fragment", "http://example.com/callback",
                                 "http://localhost/", "https://app.com/callback", "https://notexample.com/cb",
                                 "https://user:pw@example.com/cb", "https://user@example.com/cb"])
def test_web_redirect_uris_the_spec_refuses(uri):
    refused(web(redirect_uris=[uri]))


@pytest.mark.parametrize("uri", ["com.example.app:/callback", "com.example:/", "com.example:callback",
                                 "http://localhost/callback", "http://127.0.0.1/callback", "http://[::1]/callback",
                                 "https://example.com/claimed"])
def test_native_redirect_uris_the_spec_accepts(uri):
    assert validate_client_metadata(native(uri))["redirect_uris"] == [uri]


@pytest.mark.parametrize("uri", ["example:/callback", "com.example.app://callback", "https://localhost/callback",
                                 "http://localhost:1234/callback", "org.example:/cb", "com.examplex:/cb",
                                 "com.example:/cb#frag", "http://192.168.1.2/cb"])
def test_native_redirect_uris_the_spec_refuses(uri):
    refused(native(uri))


def test_client_uri_is_required_https_and_without_credentials():
    assert "client_uri is required" in refused({"redirect_uris": ["https://example.com/cb"]},
                                                "invalid_client_metadata")
    refused(web(client_uri="http://example.com/"), "invalid_client_metadata")
    refused(web(client_uri="https://u:p@example.com/"), "invalid_client_metadata")
    refused(web(client_uri="not a url"), "invalid_client_metadata")
    refused(web(application_type="desktop"), "invalid_client_metadata")
    refused("not an object", "invalid_client_metadata")


def test_loopback_http_web_clients_only_when_allowed():
    body = {"client_uri": "http://127.0.0.1:8080/", "redirect_uris": ["http://127.0.0.1:8080/cb"]}
    refused(body, "invalid_client_metadata")
    assert validate_client_metadata(body, allow_loopback_http=True)["client_uri"] == "http://127.0.0.1:8080/"
    # Only loopback: another plain-http host stays refused even then.
    refused({"client_uri": "http://example.com/", "redirect_uris": ["http://example.com/cb"]},
            "invalid_client_metadata", allow_loopback_http=True)


def test_other_uris_on_the_client_host_and_localised_values_kept():
    out = validate_client_metadata(web(logo_uri="https://cdn.example.com/logo.png", tos_uri="https://example.com/tos",
                                       **{"policy_uri#fr": "https://example.com/fr/policy", "client_name": "App",
                                          "client_name#fr": "Appli"}))
    assert out["client_name#fr"] == "Appli" and out["policy_uri#fr"] == "https://example.com/fr/policy"
    assert localised(out, "client_name", ["fr-FR", "en"]) == "Appli"
    assert localised(out, "client_name", ["de"]) == "App"
    for key in ("logo_uri", "tos_uri", "policy_uri", "tos_uri#de"):
        refused(web(**{key: "https://evil.example.net/x"}), "invalid_client_metadata")
    refused(web(policy_uri="http://example.com/policy"), "invalid_client_metadata")
    refused(web(client_name=["not", "a", "string"]), "invalid_client_metadata")


def test_grant_types_public_clients_and_defaults():
    out = validate_client_metadata(web(grant_types=["authorization_code", "refresh_token",
                                                    "urn:ietf:params:oauth:grant-type:token-exchange"]))
    assert out["grant_types"] == ["authorization_code", "refresh_token"]  # unknown ones dropped
    assert out["application_type"] == "web" and out["token_endpoint_auth_method"] == "none"
    refused(web(token_endpoint_auth_method="client_secret_basic"), "invalid_client_metadata")
    refused(web(response_types=["token"]), "invalid_client_metadata")
    refused({"client_uri": "https://example.com/"})  # the code grant (default) needs a redirect URI
    device_only = validate_client_metadata({"client_uri": "https://example.com/",
                                            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]})
    assert device_only["redirect_uris"] == []


def test_redirect_uri_matching_is_exact_except_loopback_ports():
    registered = ["https://example.com/cb", "http://127.0.0.1/cb", "http://[::1]/cb"]
    assert redirect_uri_allowed("https://example.com/cb", registered)
    assert not redirect_uri_allowed("https://example.com/cb/", registered)
    assert not redirect_uri_allowed("https://example.com/cb?x=1", registered)
    assert not redirect_uri_allowed("https://example.com:444/cb", registered)
    assert redirect_uri_allowed("http://127.0.0.1:51234/cb", registered)
    assert redirect_uri_allowed("http://[::1]:4000/cb", registered)
    assert not redirect_uri_allowed("http://127.0.0.1:51234/other", registered)
    assert not redirect_uri_allowed("http://localhost:51234/cb", registered)
