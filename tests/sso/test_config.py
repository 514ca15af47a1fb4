"""Parsing of oidc_providers / oidc_config / jwt_config / sso / templates (Synapse's key names)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from sso.mapping import JinjaOidcMappingProvider

BASE = {"server_name": "hs.test"}
PROVIDER = {"idp_id": "github", "issuer": "https://idp.example/", "client_id": "c", "client_secret": "s"}


def parse(**sections):
    return parse_config({**BASE, **sections})


def test_provider_defaults_and_synapse_idp_prefix():
    p = parse(oidc_providers=[PROVIDER]).sso.oidc_providers[0]
    assert p.idp_id == "oidc-github"  # Synapse's namespacing, which user_external_ids rely on
    assert (p.discover, p.client_auth_method, p.pkce_method, p.scopes) == (True, "client_secret_basic", "auto",
                                                                           ("openid",))
    assert p.enable_registration and not p.allow_existing_users and not p.uses_userinfo
    assert p.user_mapping_provider.cls is JinjaOidcMappingProvider


def test_legacy_oidc_config_keeps_idp_id_oidc():
    c = parse(oidc_config={"enabled": True, "issuer": "https://idp.example/", "client_id": "c",
                           "client_secret": "s"})
    assert [p.idp_id for p in c.sso.oidc_providers] == ["oidc"]
    assert any("deprecated" in w for w in c.warnings)


def test_synapse_mapper_class_name_is_an_alias():
    p = parse(oidc_providers=[{**PROVIDER, "user_mapping_provider": {
        "module": "synapse.handlers.oidc.JinjaOidcMappingProvider",
        "config": {"localpart_template": "{{ user.login }}", "confirm_localpart": True}}}]).sso.oidc_providers[0]
    assert p.user_mapping_provider.cls is JinjaOidcMappingProvider
    assert p.user_mapping_provider.parsed_config.confirm_localpart is True


@pytest.mark.parametrize("change, key", [
    ({"issuer": None}, "oidc_providers[0].issuer"),
    ({"client_id": 3}, "oidc_providers[0].client_id"),
    ({"client_secret": None}, "oidc_providers[0].client_secret"),
    ({"client_auth_method": "private_key_jwt"}, "oidc_providers[0].client_auth_method"),
    ({"pkce_method": "sometimes"}, "oidc_providers[0].pkce_method"),
    ({"idp_id": "has space"}, "oidc_providers[0].idp_id"),
    ({"idp_icon": "https://x/icon.png"}, "oidc_providers[0].idp_icon"),
    ({"user_profile_method": "id_token"}, "oidc_providers[0].user_profile_method"),
    ({"discover": False}, "oidc_providers[0].authorization_endpoint"),
    ({"attribute_requirements": [{"attribute": "groups"}]}, "oidc_providers[0].attribute_requirements[0]"),
    ({"user_mapping_provider": {"module": "no.such.Mapper"}}, "oidc_providers[0].user_mapping_provider.module"),
    ({"user_mapping_provider": {"config": {"localpart_template": "{{ user.x "}}},
     "oidc_providers[0].user_mapping_provider.config.localpart_template"),
    ({"user_mapping_provider": {"config": {"nonsense": 1}}},
     "oidc_providers[0].user_mapping_provider.config.nonsense"),
    # The request's own parameters are ours: neither added nor passed through.
    ({"passthrough_authorization_parameters": ["login_hint", "state"]},
     "oidc_providers[0].passthrough_authorization_parameters"),
    ({"additional_authorization_parameters": {"redirect_uri": "https://evil.example/"}},
     "oidc_providers[0].additional_authorization_parameters"),
])
def test_errors_name_the_key(change, key):
    provider = {k: v for k, v in {**PROVIDER, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as e:
        parse(oidc_providers=[provider])
    assert e.value.path == key, str(e.value)


def test_discover_false_needs_endpoints_and_duplicate_ids_refused():
    ok = {**PROVIDER, "discover": False, "authorization_endpoint": "https://idp/a", "token_endpoint": "https://idp/t",
          "jwks_uri": "https://idp/jwks"}
    assert parse(oidc_providers=[ok]).sso.oidc_providers[0].jwks_uri == "https://idp/jwks"
    with pytest.raises(ConfigError, match="duplicate idp_id"):
        parse(oidc_providers=[PROVIDER, PROVIDER])


def test_custom_mapper_module(tmp_path):
    p = parse(oidc_providers=[{**PROVIDER, "user_mapping_provider": {
        "module": "tests.sso.custom_mapper.UpperMapper", "config": {"prefix": "x-"}}}]).sso.oidc_providers[0]
    mapper = p.user_mapping_provider.instantiate()
    assert mapper.prefix == "x-"


def test_jwt_config():
    assert parse().sso.jwt_config is None
    assert parse(jwt_config={"enabled": False, "secret": "x"}).sso.jwt_config is None
    j = parse(jwt_config={"enabled": True, "secret": "k", "algorithm": "HS256", "audiences": ["a"],
                          "issuer": "me", "display_name_claim": "name"}).sso.jwt_config
    assert (j.algorithm, j.audiences, j.issuer, j.subject_claim, j.display_name_claim) == \
        ("HS256", ("a",), "me", "sub", "name")
    with pytest.raises(ConfigError) as e:
        parse(jwt_config={"enabled": True, "secret": "k", "algorithm": "none"})
    assert e.value.path == "jwt_config.algorithm"
    with pytest.raises(ConfigError) as e:
        parse(jwt_config={"enabled": True, "algorithm": "HS256"})
    assert e.value.path == "jwt_config.secret"


def test_jwt_secret_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "jwt.secret").write_text("from-file\n")
    monkeypatch.chdir("/")  # not the config's directory
    j = parse_config({**BASE, "jwt_config": {"enabled": True, "secret_path": "jwt.secret", "algorithm": "HS256"}},
                     config_path=str(tmp_path / "homeserver.yaml")).sso.jwt_config
    assert j.secret == "from-file"


def test_sso_section_and_templates(tmp_path):
    c = parse(sso={"client_whitelist": ["https://app.example/"], "update_profile_information": True},
              templates={"custom_template_directory": str(tmp_path)})
    assert c.sso.sso.client_whitelist == ("https://app.example/",)
    assert c.sso.sso.update_profile_information is True
    assert c.custom_template_directory == str(tmp_path)
    with pytest.raises(ConfigError) as e:
        parse(sso={"update_profile_information": "yes"})
    assert e.value.path == "sso.update_profile_information"
    with pytest.raises(ConfigError) as e:  # a missing directory fails at startup
        parse(templates={"custom_template_directory": str(tmp_path / "missing")})
    assert e.value.path == "templates.custom_template_directory"


# --- saml2_config / cas_config ---------------------------------------------------------


def test_saml_defaults_merge_like_synapse(tmp_path):
    from sso.mapping import DefaultSamlMappingProvider

    conf = tmp_path / "sp_conf.py"
    conf.write_text("CONFIG = {'accepted_time_diff': 3, 'service': {'sp': {'name_id_format': 'x'}}}\n")
    c = parse_config({**BASE, "public_baseurl": "https://matrix.hs.test/", "saml2_config": {
        "sp_config": {"allow_unknown_attributes": True, "service": {"sp": {"want_assertions_signed": False}}},
        "config_path": str(conf), "saml_session_lifetime": "5m",
        "mxid_source_attribute": "displayName",  # the legacy place still wins
        "attribute_requirements": [{"attribute": "userGroup", "value": "staff"}],
    }})
    saml = c.sso.saml2_config
    sp = saml.sp_config["service"]["sp"]
    assert saml.sp_config["entityid"] == "https://matrix.hs.test/_synapse/client/saml2/metadata.xml"
    assert sp["endpoints"]["assertion_consumer_service"][0][0] == \
        "https://matrix.hs.test/_synapse/client/saml2/authn_response"
    assert sp["want_assertions_signed"] is True  # never off
    assert sp["name_id_format"] == "x" and saml.sp_config["accepted_time_diff"] == 3
    assert saml.sp_config["allow_unknown_attributes"] is True
    assert saml.sp_config["http_client_timeout"] == 15
    assert set(sp["required_attributes"]) == {"uid", "displayName", "userGroup"}
    assert saml.session_lifetime_ms == 300_000
    assert saml.user_mapping_provider.cls is DefaultSamlMappingProvider
    assert saml.user_mapping_provider.parsed_config.mxid_source_attribute == "displayName"
    assert any("want_assertions_signed" in w for w in c.warnings)
    assert any("mxid_source_attribute is deprecated" in w for w in c.warnings)


@pytest.mark.parametrize("section,key", [
    ({"sp_config": {"metadata": {"local": ["/nonexistent/idp.xml"]}}}, "saml2_config.sp_config"),
    ({"sp_config": {}, "user_mapping_provider": {"config": {"mxid_mapping": "rot13"}}},
     "saml2_config.user_mapping_provider.config.mxid_mapping"),
    ({"sp_config": {}, "user_mapping_provider": {"module": "no.such.Mapper"}}, "saml2_config.user_mapping_provider.module"),
    ({"sp_config": "yes"}, "saml2_config.sp_config"),
    ({"config_path": "/nonexistent/sp_conf.py"}, "saml2_config.config_path"),
])
def test_saml_config_errors_name_the_key(section, key):
    with pytest.raises(ConfigError) as e:
        parse(saml2_config=section)
    assert e.value.path == key


def test_cas_config():
    c = parse(cas_config={"enabled": True, "server_url": "https://cas.example/cas/", "displayname_attribute": "name",
                          "required_attributes": {"userGroup": "staff", "department": None}, "protocol_version": 3})
    cas = c.sso.cas_config
    assert cas.server_url == "https://cas.example/cas" and cas.protocol_version == 3 and cas.idp_name == "CAS"
    assert cas.required_attributes[1].matches({"department": ["any"]})
    assert not cas.required_attributes[1].matches({})
    assert not cas.required_attributes[0].matches({"userGroup": ["guests"]})
    assert parse(cas_config={"enabled": False, "server_url": 3}).sso.cas_config is None
    for bad, key in [({"server_url": "cas.example"}, "cas_config.server_url"),
                     ({"server_url": "https://c", "protocol_version": 4}, "cas_config.protocol_version"),
                     ({"server_url": "https://c", "required_attributes": ["a"]}, "cas_config.required_attributes")]:
        with pytest.raises(ConfigError) as e:
            parse(cas_config={"enabled": True, **bad})
        assert e.value.path == key
