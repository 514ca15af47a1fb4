"""A user who signed up on a real Synapse through single sign-on (npm oidc-provider, in
headless Chromium) signs in the same way after ``gateway import-synapse`` and lands in the
same account: the SSO link (``user_external_ids``) came over, no username picker."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml

from tests.conftest import free_port
from tests.e2e.browser import chromium
from tests.e2e.oidc_idp import running_oidc_provider
from tests.e2e.test_sso_oidc_login import client_site, idp_login
from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer
from tests.support.tls import TestCA

ROOT = Path(__file__).resolve().parents[2]


def _provider(issuer: str) -> dict:
    """The same provider in both configs (Synapse's keys): same idp_id, same client."""
    return {"idp_id": "test", "idp_name": "Test IdP", "issuer": issuer, "client_id": "moving-server",
            "client_secret": "moving-secret", "scopes": ["openid", "profile"], "skip_verification": True,
            "user_mapping_provider": {"config": {"localpart_template": "{{ user.preferred_username }}",
                                                 "display_name_template": "{{ user.name }}"}}}


async def _sign_in(browser, server_url: str, client_url: str, login: str) -> str:
    """The whole SSO login in a fresh browser context; returns whom the client became."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{server_url}/_matrix/client/v3/login/sso/redirect/oidc-test"
                    f"?redirectUrl={client_url}%3Fhs%3D{server_url}")
    await idp_login(page, login)
    await page.wait_for_selector("#whoami:not(:empty)")
    assert "/pick_username/" not in page.url
    who = await page.inner_text("#whoami")
    await context.close()
    return who


async def test_an_sso_user_of_synapse_signs_in_to_the_same_account_after_the_import(tmp_path):
    ca = TestCA(tmp_path / "ca")
    synapse = SynapseServer(tmp_path / "synapse", ca)
    our_client_port, idp_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{idp_port}"
    idp_client = {"client_id": "moving-server", "client_secret": "moving-secret", "redirect_uris": [
        f"{synapse.client_url}/_synapse/client/oidc/callback",
        f"http://127.0.0.1:{our_client_port}/_synapse/client/oidc/callback"]}
    async with client_site() as client_url, running_oidc_provider(idp_port, idp_client), chromium() as browser:
        sso = {"oidc_providers": [_provider(issuer)], "sso": {"client_whitelist": [client_url]}}
        await synapse.start(sso)
        try:
            assert await _sign_in(browser, synapse.client_url, client_url, "dora") == f"@dora:{synapse.server_name}"
        finally:
            await synapse.stop()

        ours = tmp_path / "ours"
        ours.mkdir()
        config = {"server_name": synapse.server_name,
                  "database": {"name": "sqlite3", "args": {"database": str(ours / "gateway.db")}},
                  "signing_key_path": str(synapse.dir / "signing.key"), "media_store_path": str(ours / "media"),
                  "public_baseurl": f"http://127.0.0.1:{our_client_port}/", **sso}
        (ours / "homeserver.yaml").write_text(yaml.safe_dump(config))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "import-synapse", "--synapse-config", str(synapse.dir / "homeserver.yaml"),
            "--config-path", str(ours / "homeserver.yaml"), cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "1 SSO links" in out.decode(), out.decode()

        async with running_gateway(ours, ca, config, ports=(synapse.fed_port, our_client_port)) as gw:
            assert await _sign_in(browser, gw.client_url, client_url, "dora") == f"@dora:{synapse.server_name}"
