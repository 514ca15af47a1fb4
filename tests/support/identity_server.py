"""A small identity server of our own (the spec's Identity Service API v2, what a homeserver
uses), over HTTPS on loopback with a TestCA certificate, for the 3PID tests.

It keeps validated sessions (made by the test with ``validated_session``), bindings, stored
third-party invites; checks bearer tokens, and the X-Matrix signature of unbind requests
against the homeserver keys the test gives it; signs associations and invites with its own
ed25519 key; and when an address with stored invites gets bound, calls the homeserver's
``/_matrix/federation/v1/3pid/onbind`` (at ``onbind_urls[server_name]``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import nacl.signing
from aiohttp import web

from federation.canonical_json import encode_base64
from federation.signing import generate_signing_key, parse_x_matrix_authorization, sign_json, verify_request
from tests.support.tls import TestCA, serve_tls

ACCESS_TOKEN = "identity-server-access-token"


@dataclass
class Session:
    medium: str
    address: str
    client_secret: str


@dataclass
class IdentityServer:
    name: str = ""
    key: Any = field(default_factory=lambda: generate_signing_key("0"))
    pepper: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    sessions: dict[str, Session] = field(default_factory=dict)
    bindings: dict[tuple[str, str], str] = field(default_factory=dict)
    invites: list[dict[str, Any]] = field(default_factory=list)
    #: Homeserver name -> its verify key (to check signed unbinds).
    homeserver_keys: dict[str, nacl.signing.VerifyKey] = field(default_factory=dict)
    #: Homeserver name -> base URL its onbind is called at.
    onbind_urls: dict[str, str] = field(default_factory=dict)
    #: What the homeserver asked, in order: (method, path, JSON body).
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    onbind_answers: list[int] = field(default_factory=list)
    #: How onbind is called: the spec's PUT, or POST as Sydent does; TLS trust for HTTPS.
    onbind_method: str = "PUT"
    onbind_ssl: Any = None
    #: Whether /pubkey/isvalid disowns our key (as after a key revocation).
    revoked: bool = False

    @property
    def public_key(self) -> str:
        return encode_base64(self.key.signing_key.verify_key.encode())

    def validated_session(self, medium: str, address: str, client_secret: str) -> str:
        """As if the user had validated the address with us (our own mails are not tested here)."""
        sid = secrets.token_urlsafe(8)
        self.sessions[sid] = Session(medium, address, client_secret)
        return sid

    async def bind(self, medium: str, address: str, mxid: str) -> None:
        """Bind an address (as our own /bind does, or out of band), then tell the invites' homeserver."""
        self.bindings[(medium, address)] = mxid
        pending = [i for i in self.invites if (i["medium"], i["address"]) == (medium, address)]
        if not pending:
            return
        server = mxid.split(":", 1)[1]
        invites = [{"medium": medium, "address": address, "mxid": mxid, "room_id": i["room_id"],
                    "sender": i["sender"], "signed": sign_json({"mxid": mxid, "token": i["token"]}, self.name,
                                                               self.key)} for i in pending]
        async with aiohttp.ClientSession() as http:
            async with http.request(self.onbind_method, f"{self.onbind_urls[server]}/_matrix/federation/v1/3pid/onbind",
                                    ssl=self.onbind_ssl, json={"medium": medium, "address": address, "mxid": mxid,
                                                               "invites": invites}) as resp:
                self.onbind_answers.append(resp.status)
        self.invites = [i for i in self.invites if i not in pending]

    # --- the HTTP API --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        r = app.router
        r.add_post("/_matrix/identity/v2/3pid/bind", self._bind)
        r.add_post("/_matrix/identity/v2/3pid/unbind", self._unbind)
        r.add_get("/_matrix/identity/v2/hash_details", self._hash_details)
        r.add_post("/_matrix/identity/v2/lookup", self._lookup)
        r.add_post("/_matrix/identity/v2/store-invite", self._store_invite)
        r.add_get("/_matrix/identity/v2/pubkey/isvalid", self._key_valid)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler):
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, body))
        if request.path != "/_matrix/identity/v2/pubkey/isvalid" and request.path != "/_matrix/identity/v2/3pid/unbind" \
                and request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return web.json_response({"errcode": "M_UNAUTHORIZED", "error": "bad token"}, status=401)
        return await handler(request)

    async def _bind(self, request: web.Request) -> web.Response:
        body = await request.json()
        session = self.sessions.get(body.get("sid"))
        if session is None or session.client_secret != body.get("client_secret"):
            return web.json_response({"errcode": "M_NO_VALID_SESSION", "error": "unknown session"}, status=404)
        await self.bind(session.medium, session.address, body["mxid"])
        return web.json_response(sign_json({"medium": session.medium, "address": session.address,
                                            "mxid": body["mxid"], "not_before": 0, "not_after": 2**53, "ts": 0},
                                           self.name, self.key))

    async def _unbind(self, request: web.Request) -> web.Response:
        body = await request.json()
        auth = parse_x_matrix_authorization(request.headers.get("Authorization", ""))
        verify_key = self.homeserver_keys.get(auth.origin)
        if verify_key is None or auth.destination != self.name:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "unknown origin"}, status=403)
        verify_request(auth, request.method, request.raw_path, body, self.name, verify_key)  # raises if forged
        if body["mxid"].split(":", 1)[1] != auth.origin:
            return web.json_response({"errcode": "M_FORBIDDEN", "error": "not your user"}, status=403)
        threepid = (body["threepid"]["medium"], body["threepid"]["address"])
        if self.bindings.get(threepid) != body["mxid"]:
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "not bound"}, status=404)
        del self.bindings[threepid]
        return web.json_response({})

    async def _hash_details(self, request: web.Request) -> web.Response:
        return web.json_response({"algorithms": ["none", "sha256"], "lookup_pepper": self.pepper})

    async def _lookup(self, request: web.Request) -> web.Response:
        from gateway.services.identity_servers import lookup_hash

        body = await request.json()
        if body.get("pepper") != self.pepper:
            return web.json_response({"errcode": "M_INVALID_PEPPER", "error": "wrong pepper"}, status=400)
        keyed = {lookup_hash(m, a, self.pepper) if body["algorithm"] == "sha256" else f"{a} {m}": mxid
                 for (m, a), mxid in self.bindings.items()}
        return web.json_response({"mappings": {k: keyed[k] for k in body["addresses"] if k in keyed}})

    async def _store_invite(self, request: web.Request) -> web.Response:
        body = await request.json()
        token = secrets.token_urlsafe(12)
        self.invites.append({**body, "token": token})
        local, _, domain = body["address"].partition("@")
        return web.json_response({
            "token": token, "display_name": f"{local[:1]}...@{domain[:1]}...",
            "public_keys": [{"public_key": self.public_key,
                             "key_validity_url": f"https://{self.name}/_matrix/identity/v2/pubkey/isvalid"}]})

    async def _key_valid(self, request: web.Request) -> web.Response:
        return web.json_response({"valid": request.query.get("public_key") == self.public_key and not self.revoked})


async def start_identity_server(ca: TestCA, host: str = "127.0.0.1") -> tuple[IdentityServer, Any]:
    """Serve one over HTTPS on 127.0.0.1, named ``host`` (its certificate's name: an IP, or
    ``localhost``); (server, runner to clean up)."""
    server = IdentityServer()
    runner, port = await serve_tls(server.app(), ca, host)
    server.name = f"{host}:{port}"
    return server, runner
