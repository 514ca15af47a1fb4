"""The federation tester's JSON API, against our own server and fakes (Synapse: test_federation_tester_outbound)."""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from tests.support.gateway_server import running_gateway
from tests.support.tls import TestCA, serve_tls


def _extra(ca: TestCA) -> dict:
    return {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"]}


async def test_api_reports_on_itself_and_a_dead_server(tmp_path):
    from prometheus_client import REGISTRY, generate_latest

    ca = TestCA(tmp_path / "ca")
    extra = {**_extra(ca), "federation_tester": {"self_check_interval": "1h"}}
    async with running_gateway(tmp_path, ca, extra) as gw:
        api = f"{gw.client_url}/_gateway/federation-tester/api"
        async with aiohttp.ClientSession() as s:
            # The scheduled self-check ran at startup: its report, its age, its metrics.
            async with s.get(f"{api}/self") as r:
                latest = await r.json()
            assert latest["ServerName"] == gw.server_name and latest["AgeSeconds"] >= 0
            assert latest["Report"]["FederationOK"] is True, latest["Report"]["Explanations"]
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "federation-test", "--via", gw.client_url, "--self-check",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await cli.communicate()
            assert cli.returncode == 0, err
            assert out.decode().startswith(f"Last self-check of {gw.server_name}, ") and b"Federation: OK" in out
            metrics = generate_latest(REGISTRY).decode()
            assert f'gateway_federation_tester_self_ok{{server_name="{gw.server_name}"}} 1.0' in metrics
            assert f'gateway_federation_tester_self_age_seconds{{server_name="{gw.server_name}"}}' in metrics
            async with s.get(f"{api}/report", params={"server_name": gw.server_name}) as r:
                report = await r.json()
            assert report["FederationOK"] is True, report["Explanations"]
            assert report["SignedRequest"] == {"OK": True, "Status": 200} or report["SignedRequest"]["Status"] == 404
            assert set(report) >= {"WellKnownResult", "DNSResult", "ConnectionReports", "ConnectionErrors",
                                   "Version", "FederationOK"}
            async with s.get(f"{api}/federation-ok", params={"server_name": gw.server_name}) as r:
                assert await r.text() == "GOOD"
            async with s.get(f"{api}/federation-ok", params={"server_name": "127.0.0.1:1"}) as r:
                assert await r.text() == "BAD"
            async with s.get(f"{api}/report") as r:
                assert r.status == 400 and (await r.json())["errcode"] == "M_MISSING_PARAM"


async def test_api_refuses_blocked_ranges_by_default(tmp_path):
    ca = TestCA(tmp_path / "ca")
    async with running_gateway(tmp_path, ca) as gw:  # default policy: loopback is blocked
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.client_url}/_gateway/federation-tester/api/report",
                             params={"server_name": gw.server_name}) as r:
                report = await r.json()
            async with s.get(f"{gw.client_url}/_gateway/federation-tester/api/self") as r:
                self_check = {"status": r.status, "errcode": (await r.json())["errcode"]}
    assert report["FederationOK"] is False and report["ConnectionReports"] == {}
    assert self_check == {"status": 404, "errcode": "M_NOT_FOUND"}  # no self_check_interval


async def test_api_reports_a_refused_signed_request(tmp_path):
    import time

    from aiohttp import web

    from federation.signing import encode_verify_key, generate_signing_key, sign_json
    from tests.conftest import free_port

    ca = TestCA(tmp_path / "ca")
    port = free_port()
    name = f"127.0.0.1:{port}"
    key = generate_signing_key("k")

    async def keys(request):
        return web.json_response(sign_json({"server_name": name, "valid_until_ts": int(time.time() * 1000) + 60_000,
                                            "verify_keys": {key.key_id: {"key": encode_verify_key(key.verify_key)}},
                                            "old_verify_keys": {}}, name, key))

    async def refuse(request):
        # It fetches the sender's keys (so it can reach us back), then refuses all the same.
        origin = request.headers["Authorization"].split('origin="', 1)[1].split('"', 1)[0]
        async with aiohttp.ClientSession() as s:
            async with s.get(f"https://{origin}/_matrix/key/v2/server", ssl=False) as r:
                assert r.status == 200
        return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "no"}, status=401)

    other = generate_signing_key("k")  # what this lying notary claims the server's key is

    async def notary(request):
        return web.json_response({"server_keys": [{"server_name": name, "valid_until_ts": 2**40, "verify_keys": {
            key.key_id: {"key": encode_verify_key(other.verify_key)}}}]})

    app = web.Application()
    app.router.add_get("/_matrix/key/v2/server", keys)
    app.router.add_get("/_matrix/federation/v1/query/profile", refuse)
    app.router.add_post("/_matrix/key/v2/query", notary)
    runner, _ = await serve_tls(app, ca, "127.0.0.1", port=port)
    try:
        extra = {**_extra(ca), "trusted_key_servers": [{"server_name": name}]}
        async with running_gateway(tmp_path, ca, extra) as gw, aiohttp.ClientSession() as s:
            async with s.get(f"{gw.client_url}/_gateway/federation-tester/api/report", params={"server_name": name}) as r:
                report = await r.json()
    finally:
        await runner.cleanup()
    assert report["ConnectionReports"][name]["Checks"]["AllChecksOK"] is True
    assert report["SignedRequest"]["OK"] is False and report["SignedRequest"]["Status"] == 401
    assert report["FederationOK"] is False
    assert any("refused a request signed by" in t for t in report["Explanations"])
    assert report["Outbound"]["CanReachUs"] is True and "still refused the request (HTTP 401)" in \
        report["Outbound"]["Explanation"]
    assert report["NotaryChecks"][name]["OK"] is False
    assert any("serves different keys" in t for t in report["Explanations"])
