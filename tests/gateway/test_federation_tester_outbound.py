"""The federation tester against ONE real Synapse for the module: it is reported OK, it
fetches the key published for a run (so it can reach us back), and when its IP rules
block the tester's address it "can receive but not send"."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import pytest
import pytest_asyncio

from tests.support.gateway_server import running_gateway
from tests.support.synapse import SynapseServer
from tests.support.tls import TestCA

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the shared Synapse

BLOCKED_HOST = "127.0.0.2"  # a loopback address this Synapse may not connect to


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def synapse(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synapse")
    ca = TestCA(directory / "ca")
    server = SynapseServer(directory / "synapse", ca)
    # Its outbound federation may go to 127.0.0.1 but not to 127.0.0.2.
    await server.start({"federation_ip_range_blacklist": [f"{BLOCKED_HOST}/32"]})
    try:
        yield server
    finally:
        await server.stop()


def _extra(ca: TestCA, **more) -> dict:
    return {"federation_custom_ca_list": [str(ca.ca_path)], "ip_range_whitelist": ["127.0.0.0/8"], **more}


async def _report(gw, server_name: str) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gw.client_url}/_gateway/federation-tester/api/report",
                         params={"server_name": server_name}) as r:
            assert r.status == 200
            return await r.json()


async def test_synapse_ok_and_reaches_us_back(tmp_path, synapse):
    extra = _extra(synapse.ca, trusted_key_servers=[{"server_name": synapse.server_name}])
    async with running_gateway(tmp_path, synapse.ca, extra) as gw:
        report = await _report(gw, synapse.server_name)
        # Synapse as the notary for our own keys: it must serve the same ones we do.
        ours = await _report(gw, gw.server_name)
    assert ours["FederationOK"] is True, ours["Explanations"]
    assert ours["NotaryChecks"][synapse.server_name]["OK"] is True
    assert ours["Outbound"]["CanReachUs"] is None and "running this tester" in ours["Outbound"]["Explanation"]
    assert report["NotaryChecks"][synapse.server_name]["OK"] is True
    assert report["FederationOK"] is True, report["Explanations"]
    assert report["Version"]["name"] == "Synapse"
    assert report["SignedRequest"]["OK"] is True and report["SignedRequest"]["Status"] in (200, 404)
    # It could only check the run's signature by fetching that key from us.
    outbound = report["Outbound"]
    assert outbound["CanReachUs"] is True, outbound
    assert outbound["KeyFetches"] and outbound["KeyFetches"][0]["From"] == "127.0.0.1"
    assert "Synapse" in outbound["KeyFetches"][0]["UserAgent"]
    assert [a["OK"] for a in report["Diagnosis"] if a["Area"] == "Reaching others"] == [True]


async def test_synapse_that_cannot_reach_us_can_receive_but_not_send(tmp_path, synapse):
    async with running_gateway(tmp_path, synapse.ca, _extra(synapse.ca), host=BLOCKED_HOST) as gw:
        # The command line asks this Gateway's tester (--via), which can check the way back.
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "federation-test", synapse.server_name, "--via", gw.client_url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await cli.communicate()
        report = await _report(gw, synapse.server_name)
        keys_after = await _server_keys(gw)
    assert cli.returncode == 2, err
    assert f"  [!!] Reaching others: {synapse.server_name} can receive but not send" in out.decode(), out
    # Inbound is fine: TLS, keys, version all answer.
    assert report["ConnectionReports"][synapse.server_name]["Checks"]["AllChecksOK"] is True
    outbound = report["Outbound"]
    assert outbound["CanReachUs"] is False, outbound
    assert outbound["KeyFetches"] == []
    assert "can receive but not send" in outbound["Explanation"]
    assert report["FederationOK"] is False
    assert outbound["Explanation"] in report["Explanations"]
    diagnosis = {a["Area"]: a for a in report["Diagnosis"]}
    assert diagnosis["Reaching others"]["OK"] is False
    assert "can receive but not send" in diagnosis["Federation"]["Words"]
    # The run's key is published for that run only.
    assert [k for k in keys_after["verify_keys"] if "tester_" in k] == []


async def _server_keys(gw) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gw.federation_url}/_matrix/key/v2/server", ssl=False) as r:
            return await r.json()
