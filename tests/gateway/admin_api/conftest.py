from tests.gateway.client_api.conftest import client, config_overrides, hs  # noqa: F401  (shared fixtures)
