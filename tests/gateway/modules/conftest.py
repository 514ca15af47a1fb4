from tests.gateway.client_api.conftest import client, hs  # noqa: F401  (shared fixtures)
