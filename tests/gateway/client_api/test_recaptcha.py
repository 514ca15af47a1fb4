"""The ``m.login.recaptcha`` registration stage against a verify API of our own on loopback:
required with ``enable_registration_captcha`` (its public key in the stage's ``params``),
accepted though not required when only the keys are set (as Synapse does). Both engines."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import free_port

C = "/_matrix/client/v3"
SECRET, RIGHT = "captcha-secret", "right-answer"


@pytest.fixture
async def verify_api():
    """Answers ``success`` for RIGHT sent with SECRET; keeps the forms it got."""
    forms: list[dict] = []

    async def siteverify(request: web.Request) -> web.Response:
        form = dict(await request.post())
        forms.append(form)
        return web.json_response({"success": form == {"secret": SECRET, "response": RIGHT}})

    app = web.Application()
    app.router.add_post("/siteverify", siteverify)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/siteverify", forms
    await runner.cleanup()


def captcha_config(url: str, required: bool) -> dict:
    return {"enable_registration_captcha": required, "recaptcha_public_key": "site-key",
            "recaptcha_private_key": SECRET, "recaptcha_siteverify_api": url, "ip_range_whitelist": ["127.0.0.0/8"]}


@pytest.fixture
def config_overrides(request, verify_api):
    return captcha_config(verify_api[0], request.param)


async def register(client, auth: dict | None = None, session: str | None = None):
    body: dict = {"username": "kim", "password": "kim-password"}
    if auth is not None:
        body["auth"] = {**auth, **({"session": session} if session else {})}
    resp = await client.post(f"{C}/register", json=body)
    return resp.status, await resp.json()


@pytest.mark.parametrize("config_overrides", [True], indirect=True)
async def test_a_required_captcha(client, verify_api):
    _, forms = verify_api
    status, body = await register(client)
    assert status == 401 and body["flows"] == [{"stages": ["m.login.recaptcha", "m.login.dummy"]}]
    assert body["params"]["m.login.recaptcha"] == {"public_key": "site-key"}
    session = body["session"]
    # The dummy stage alone does not do.
    status, body = await register(client, {"type": "m.login.dummy"}, session)
    assert status == 401 and body["completed"] == ["m.login.dummy"]
    status, body = await register(client, {"type": "m.login.recaptcha", "response": "wrong"}, session)
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED" and body["completed"] == ["m.login.dummy"]
    status, body = await register(client, {"type": "m.login.recaptcha"}, session)
    assert status == 401 and body["errcode"] == "M_CAPTCHA_NEEDED"
    status, body = await register(client, {"type": "m.login.recaptcha", "response": RIGHT}, session)
    assert status == 200 and body["user_id"] == "@kim:hs.test"
    assert forms == [{"secret": SECRET, "response": "wrong"}, {"secret": SECRET, "response": RIGHT}]


@pytest.mark.parametrize("config_overrides", [False], indirect=True)
async def test_a_configured_captcha_may_be_solved_where_not_required(client, verify_api):
    status, body = await register(client, {"type": "m.login.recaptcha", "response": RIGHT})
    assert status == 401 and body["completed"] == ["m.login.recaptcha"]
    assert body["flows"] == [{"stages": ["m.login.dummy"]}]
    status, body = await register(client, {"type": "m.login.dummy"}, body["session"])
    assert status == 200


@pytest.mark.parametrize("config_overrides", [{"ip_range_whitelist": ["127.0.0.0/8"]}])
async def test_no_captcha_stage_without_keys(client):
    status, body = await register(client, {"type": "m.login.recaptcha", "response": RIGHT})
    assert status == 401 and body["errcode"] == "M_UNRECOGNIZED" and body["completed"] == []
