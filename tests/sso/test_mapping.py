"""The default Jinja OIDC mapper and the localpart helpers."""

from __future__ import annotations

import pytest

from sso.mapping import (
    JinjaOidcMappingProvider,
    MappingError,
    load_mapping_provider,
    localpart_from_email,
    map_username_to_mxid_localpart,
)


def mapper(**config):
    return JinjaOidcMappingProvider(JinjaOidcMappingProvider.parse_config(config))


@pytest.mark.parametrize("name, localpart", [
    ("Alice", "alice"), ("bob_smith", "bob_smith"), ("_svc", "=5fsvc"), ("a b", "a=20b"), ("é", "=c3=a9"),
    ("x=y", "x=3dy"), ("a.b-c/d+e", "a.b-c/d+e"),
])
def test_map_username_to_mxid_localpart(name, localpart):
    assert map_username_to_mxid_localpart(name) == localpart


def test_localpart_from_email():
    assert localpart_from_email("john.doe@example.com") == "john.doe"


async def test_templates_render_claims_and_failures_dedupe():
    m = mapper(localpart_template="{{ user.email | localpart_from_email }}", display_name_template="{{ user.name }}",
               email_template="{{ user.email }}", extra_attributes={"dept": "{{ user.dept }}"})
    user = {"sub": "123", "email": "John.Doe@example.com", "name": "John", "dept": "ops"}
    assert m.get_remote_user_id(user) == "123"
    first = await m.map_user_attributes(user, {}, 0)
    assert first["localpart"] == "john.doe" and first["display_name"] == "John"
    assert first["emails"] == ["John.Doe@example.com"]
    assert (await m.map_user_attributes(user, {}, 2))["localpart"] == "john.doe2"
    assert await m.get_extra_attributes(user, {}) == {"dept": "ops"}


async def test_no_localpart_template_means_username_picker_and_missing_claims_are_none():
    m = mapper(subject_claim="id")
    attrs = await m.map_user_attributes({"id": 7}, {}, 0)
    assert attrs["localpart"] is None and attrs["display_name"] is None and attrs["emails"] == []
    assert m.get_remote_user_id({"id": 7}) == "7"


async def test_empty_localpart_is_an_error():
    with pytest.raises(MappingError):
        await mapper(localpart_template="{{ user.missing }}").map_user_attributes({"sub": "x"}, {}, 0)


def test_load_mapping_provider_errors():
    with pytest.raises(MappingError, match="module"):
        load_mapping_provider("nodots", {})
    with pytest.raises(MappingError, match="has no class"):
        load_mapping_provider("sso.mapping.Nope", {})
    with pytest.raises(MappingError, match="parse_config rejected"):
        load_mapping_provider("tests.sso.custom_mapper.UpperMapper", {})
