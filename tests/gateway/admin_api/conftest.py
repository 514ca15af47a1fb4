import pytest

from tests.gateway.client_api.conftest import auth_header, client, config_overrides, hs  # noqa: F401  (shared fixtures)


@pytest.fixture
async def admin(hs, client):
    """The Authorization header of a server admin (@root:hs.test)."""
    await hs.auth.users.create_user("@root:hs.test", password_hash=None, created_ts=1, admin=True)
    session = await hs.auth.login_session("@root:hs.test")
    return auth_header(session["access_token"])
