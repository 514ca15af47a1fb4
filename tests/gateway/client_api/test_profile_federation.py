"""Profiles across servers (our server in-process on TLS, a scripted remote): our
clients read remote users' profiles through federation ``query/profile`` (with
``field``, remembered briefly, the remote's 404/403 passed on, 502 when it cannot be
asked), and we answer other servers' queries (``field``, extended fields,
``allow_profile_lookup_over_federation``)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from federation.net.client import FederationRequestError
from tests.conftest import free_port
from tests.gateway.federation_api.test_transactions import ca  # noqa: F401
from tests.support.client_api import q
from tests.support.fake_remote import FakeRemote, local_gateway

C = "/_matrix/client/v3"


class ProfileServer:
    """The remote's ``query/profile``: answers from ``profiles`` (user -> profile, or an
    HTTP status to answer with) and records the queries."""

    def __init__(self, remote: FakeRemote):
        self.remote = remote
        self.profiles: dict[str, dict | int | list] = {}
        self.queries: list[dict[str, str]] = []
        #: Answers for users whose profile is "slow" wait for this.
        self.release = asyncio.Event()
        remote.extra_routes.append(("GET", "/_matrix/federation/v1/query/profile", self.query))

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.remote.server_name}"

    async def query(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        found = self.profiles.get(request.query["user_id"], 404)
        if found == "slow":
            await self.release.wait()
            found = {"displayname": "Late"}
        if found == 404:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "No such user here"}, status=404)
        if isinstance(found, int):
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "We keep profiles to ourselves"},
                                     status=found)
        field = request.query.get("field")
        if field is not None and isinstance(found, dict):
            found = {field: found[field]} if field in found else {}
        return web.json_response(found)


@contextlib.asynccontextmanager
async def gateway_and_remote(tmp_path, database_config, ca, extra=None):
    remote = FakeRemote(ca)
    profiles = ProfileServer(remote)
    async with local_gateway(tmp_path, database_config, ca, extra) as gw, remote, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw.ssl)) as session:
        yield gw, profiles, session


async def _get(session, url, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as r:
        return r.status, await r.json()


async def test_reading_a_remote_users_profile(tmp_path, database_config, ca):
    async with gateway_and_remote(tmp_path, database_config, ca) as (gw, remote, s):
        bob, carol = remote.user("bob"), remote.user("carol")
        remote.profiles[bob] = {"displayname": "Bob", "avatar_url": "mxc://remote/b", "m.tz": "Europe/Paris",
                                "com.example.pets": ["cat"]}
        remote.profiles[carol] = {"displayname": "Carol"}
        whole = await _get(s, f"{gw.url}{C}/profile/{q(bob)}")
        assert whole == (200, remote.profiles[bob])
        assert remote.queries == [{"user_id": bob}]
        # Remembered: the whole profile answers field reads too, without asking again.
        assert await _get(s, f"{gw.url}{C}/profile/{q(bob)}") == whole
        assert await _get(s, f"{gw.url}{C}/profile/{q(bob)}/m.tz") == (200, {"m.tz": "Europe/Paris"})
        assert len(remote.queries) == 1
        # One field of a profile not seen yet: asked with ``field``.
        assert await _get(s, f"{gw.url}{C}/profile/{q(carol)}/displayname") == (200, {"displayname": "Carol"})
        assert remote.queries[-1] == {"user_id": carol, "field": "displayname"}
        # An unset avatar reads as null (like ours); an unset custom field is 404.
        assert await _get(s, f"{gw.url}{C}/profile/{q(carol)}/avatar_url") == (200, {"avatar_url": None})
        assert remote.queries[-1] == {"user_id": carol, "field": "avatar_url"}
        status, body = await _get(s, f"{gw.url}{C}/profile/{q(carol)}/com.example.pets")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_remote_refusals_and_failures(tmp_path, database_config, ca):
    async with gateway_and_remote(tmp_path, database_config, ca) as (gw, remote, s):
        ghost, shy, odd = remote.user("ghost"), remote.user("shy"), remote.user("odd")
        remote.profiles[shy] = 403
        remote.profiles[odd] = ["not", "an", "object"]
        status, body = await _get(s, f"{gw.url}{C}/profile/{q(ghost)}")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        # The absence is remembered too.
        status, _ = await _get(s, f"{gw.url}{C}/profile/{q(ghost)}")
        assert status == 404 and len(remote.queries) == 1
        status, body = await _get(s, f"{gw.url}{C}/profile/{q(shy)}/displayname")
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
        status, body = await _get(s, f"{gw.url}{C}/profile/{q(odd)}")
        assert status == 502 and body["errcode"] == "M_UNKNOWN"
        # Nobody listens there.
        status, body = await _get(s, f"{gw.url}{C}/profile/{q('@x:127.0.0.1:' + str(free_port()))}")
        assert status == 502 and body["errcode"] == "M_UNKNOWN"


@pytest.mark.parametrize("share", [False, True])
async def test_remote_profiles_and_shared_rooms(tmp_path, database_config, ca, share):
    """With ``limit_profile_requests_to_users_who_share_rooms``, a remote user's profile
    is fetched only for users who share a room with them."""
    extra = {"limit_profile_requests_to_users_who_share_rooms": True}
    async with gateway_and_remote(tmp_path, database_config, ca, extra) as (gw, remote, s):
        bob = remote.user("bob")
        remote.profiles[bob] = {"displayname": "Bob"}
        async with s.post(f"{gw.url}{C}/register", json={"username": "alice", "password": "secret-pass",
                                                         "auth": {"type": "m.login.dummy"}}) as r:
            token = (await r.json())["access_token"]
        if share:  # bob's membership as our server knows it
            await gw.hs.db.execute(
                "INSERT INTO room_memberships (room_id, user_id, membership, event_id, sender, stream_ordering)"
                " VALUES ('!r:x', $1, 'join', '$a', $1, 1), ('!r:x', $2, 'join', '$b', $2, 2)",
                "@alice:" + gw.server_name, bob)
            assert await _get(s, f"{gw.url}{C}/profile/{q(bob)}", token) == (200, {"displayname": "Bob"})
        else:
            status, body = await _get(s, f"{gw.url}{C}/profile/{q(bob)}", token)
            assert status == 403 and body["errcode"] == "M_FORBIDDEN"
            assert remote.queries == []


async def test_answering_other_servers(tmp_path, database_config, ca):
    async with gateway_and_remote(tmp_path, database_config, ca) as (gw, remote, s):
        async with s.post(f"{gw.url}{C}/register", json={"username": "alice", "password": "secret-pass",
                                                         "auth": {"type": "m.login.dummy"}}) as r:
            token = (await r.json())["access_token"]
        alice = "@alice:" + gw.server_name
        headers = {"Authorization": f"Bearer {token}"}
        for field, value in (("m.tz", "Asia/Tokyo"), ("com.example.pets", {"cat": 2})):
            async with s.put(f"{gw.url}{C}/profile/{q(alice)}/{field}", json={field: value}, headers=headers) as r:
                assert r.status == 200

        async def ask(**query):
            try:
                return 200, await remote.remote.client.request(
                    "GET", gw.server_name, "/_matrix/federation/v1/query/profile", query=query)
            except FederationRequestError as e:
                return e.status, e.body

        assert await ask(user_id=alice) == (200, {"displayname": "alice", "m.tz": "Asia/Tokyo",
                                                  "com.example.pets": {"cat": 2}})
        assert await ask(user_id=alice, field="displayname") == (200, {"displayname": "alice"})
        assert await ask(user_id=alice, field="m.tz") == (200, {"m.tz": "Asia/Tokyo"})
        # An unset avatar is left out; an unset custom field is 404.
        assert await ask(user_id=alice, field="avatar_url") == (200, {})
        status, body = await ask(user_id=alice, field="com.example.unset")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        for query, status_code, errcode in (
                ({"user_id": "@nobody:" + gw.server_name}, 404, "M_NOT_FOUND"),
                ({"user_id": "@bob:elsewhere.test"}, 400, "M_INVALID_PARAM"),
                ({"user_id": "not an id"}, 400, "M_INVALID_PARAM"),
                ({}, 400, "M_MISSING_PARAM"),
                ({"user_id": alice, "field": "Bad Field"}, 400, "M_INVALID_PARAM")):
            status, body = await ask(**query)
            assert (status, body["errcode"]) == (status_code, errcode), query


async def test_allow_profile_lookup_over_federation_false(tmp_path, database_config, ca):
    extra = {"allow_profile_lookup_over_federation": False}
    async with gateway_and_remote(tmp_path, database_config, ca, extra) as (gw, remote, s):
        async with s.post(f"{gw.url}{C}/register", json={"username": "alice", "password": "secret-pass",
                                                         "auth": {"type": "m.login.dummy"}}) as r:
            assert r.status == 200
        with pytest.raises(FederationRequestError) as e:
            await remote.remote.client.request("GET", gw.server_name, "/_matrix/federation/v1/query/profile",
                                               query={"user_id": "@alice:" + gw.server_name})
        assert e.value.status == 403 and e.value.body["errcode"] == "M_FORBIDDEN"
        # Our own clients still read it.
        assert await _get(s, f"{gw.url}{C}/profile/{q('@alice:' + gw.server_name)}") == (200, {"displayname": "alice"})


async def test_what_invites_carry_of_remote_users(tmp_path, database_config, ca):
    """An invite carries a remote invitee's name when their server answers within a few
    seconds, and nothing (but is not held up) when it does not."""
    async with gateway_and_remote(tmp_path, database_config, ca) as (gw, remote, s):
        bob, slow, ghost = remote.user("bob"), remote.user("slow"), remote.user("ghost")
        remote.profiles[bob] = {"displayname": "Bob", "avatar_url": "mxc://remote/b", "m.tz": "UTC"}
        remote.profiles[slow] = "slow"
        profiles = gw.hs.profiles
        assert await profiles.invite_profile(bob) == {"displayname": "Bob", "avatar_url": "mxc://remote/b"}
        assert await profiles.invite_profile(slow) == {}
        assert await profiles.invite_profile(ghost) == {}
        remote.release.set()
