"""OpenID Connect (and plain OAuth 2.0) identity providers: authorization code flow.

authlib builds the authorization request and the PKCE challenge and checks discovery
metadata; joserfc (authlib's JOSE library) verifies the id_token against the provider's
JWKS. HTTP goes through aiohttp. Nothing is fetched at startup: metadata and keys are
loaded on first use and cached, so an IdP that is down does not stop the server; the
next login retries.

Specs: https://openid.net/specs/openid-connect-core-1_0.html (code flow, id_token
validation), RFC 7636 (PKCE). Config: Synapse's ``oidc_providers``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import urllib.parse
from typing import Any, Callable, Mapping

import aiohttp
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import UserInfo
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, import_key

from gateway.config.sso import OidcProviderConfig
from gateway.storage.sso import SsoLoginSession

from .mapping import UserAttributes
from .provider import RemoteIdentity, SsoError

__all__ = ["OidcProvider", "ID_TOKEN_LEEWAY_S", "LogoutTokenError", "same_issuer", "validate_logout_token"]

log = logging.getLogger(__name__)

#: Clock skew allowed on id_token exp/iat/nbf.
ID_TOKEN_LEEWAY_S = 120
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def same_issuer(claimed: Any, configured: str) -> bool:
    """The issuer a provider names (discovery document, ``iss`` claim) is the configured one.
    A trailing slash is not a difference: operators write ``https://idp.example/`` for a
    provider whose documents say ``https://idp.example`` and the other way round (OpenID
    Connect Discovery 1.0, section 4.3, asks for an exact match; the slash is the one
    variation seen in practice, and it cannot name another issuer)."""
    return isinstance(claimed, str) and claimed.rstrip("/") == configured.rstrip("/")


class OidcProvider:
    """One entry of ``oidc_providers``; implements ``sso.provider.IdentityProvider``."""

    def __init__(self, config: OidcProviderConfig, callback_url: str,
                 http: Callable[[], aiohttp.ClientSession], clock_ms: Callable[[], int] | None = None):
        self.config = config
        self.callback_url = callback_url
        self._http = http
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        self.idp_id = config.idp_id
        self.idp_name = config.idp_name
        self.idp_icon = config.idp_icon
        self.idp_brand = config.idp_brand
        self.allow_existing_users = config.allow_existing_users
        self.enable_registration = config.enable_registration
        self.mapper = config.user_mapping_provider.instantiate()
        self._metadata: dict[str, Any] | None = None
        self._jwks: KeySet | None = None
        self._lock = asyncio.Lock()

    # --- metadata and keys (lazy, cached) ----------------------------------------------

    async def load_metadata(self) -> dict[str, Any]:
        """Discovery document merged with explicit endpoints; cached after the first success."""
        if self._metadata is not None:
            return self._metadata
        async with self._lock:
            if self._metadata is not None:
                return self._metadata
            c = self.config
            meta: dict[str, Any] = {}
            if c.discover:
                url = c.issuer.rstrip("/") + "/.well-known/openid-configuration"
                meta = await self._get_json(url, "discovery document")
            meta.setdefault("issuer", c.issuer)
            for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
                value = getattr(c, key)
                if value is not None:
                    meta[key] = value
            self._validate_metadata(meta)
            self._metadata = meta
            return meta

    def _validate_metadata(self, meta: dict[str, Any]) -> None:
        c = self.config
        if not meta.get("authorization_endpoint") or not meta.get("token_endpoint"):
            raise SsoError("server_error", f"{c.idp_name} publishes no authorization or token endpoint.", 503)
        if c.uses_userinfo and not meta.get("userinfo_endpoint"):
            raise SsoError("server_error", f"{c.idp_name} publishes no userinfo endpoint.", 503)
        if "openid" in c.scopes and not meta.get("jwks_uri"):
            raise SsoError("server_error", f"{c.idp_name} publishes no jwks_uri.", 503)
        if c.skip_verification:
            return
        if not same_issuer(meta["issuer"], c.issuer):
            raise SsoError("server_error", f"{c.idp_name}'s discovery document names issuer {meta['issuer']!r},"
                           f" not the configured {c.issuer!r}.", 503)
        try:
            checked = OpenIDProviderMetadata(meta)
            checked.validate_issuer()
            checked.validate_authorization_endpoint()
            checked.validate_token_endpoint()
            if meta.get("jwks_uri"):
                checked.validate_jwks_uri()
            if meta.get("userinfo_endpoint", "").startswith("http://"):
                raise ValueError('"userinfo_endpoint" MUST use "https" scheme')
        except ValueError as e:
            raise SsoError("server_error", f"{c.idp_name}'s metadata is invalid: {e}", 503) from None

    async def _load_jwks(self, force: bool = False) -> KeySet:
        if self._jwks is not None and not force:
            return self._jwks
        meta = await self.load_metadata()
        data = await self._get_json(meta["jwks_uri"], "signing keys (JWKS)")
        try:
            self._jwks = KeySet.import_key_set(data)
        except (JoseError, ValueError, TypeError) as e:
            raise SsoError("server_error", f"{self.config.idp_name}'s JWKS is unusable: {e}", 503) from None
        return self._jwks

    async def _get_json(self, url: str, what: str, headers: dict[str, str] | None = None) -> Any:
        try:
            async with self._http().get(url, headers=headers, timeout=_HTTP_TIMEOUT) as resp:
                if resp.status != 200:
                    raise SsoError("server_error",
                                   f"{self.config.idp_name} answered HTTP {resp.status} for its {what}.", 503)
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            log.warning("OIDC %s: cannot fetch %s from %s: %s", self.idp_id, what, url, e)
            raise SsoError("server_error", f"Could not reach {self.config.idp_name} ({what}). "
                           "Please try again in a moment.", 503) from None

    def _use_pkce(self, meta: Mapping[str, Any]) -> bool:
        if self.config.pkce_method == "always":
            return True
        if self.config.pkce_method == "never":
            return False
        return "S256" in (meta.get("code_challenge_methods_supported") or ())

    # --- the two halves of the flow -------------------------------------------------------

    async def authorization_url(self, session: SsoLoginSession,
                                request_params: Mapping[str, str] | None = None) -> str:
        """The IdP's authorization endpoint with our request (RFC 6749 section 4.1.1), the
        configured ``additional_authorization_parameters``, and those of the client's query
        that ``passthrough_authorization_parameters`` lists (e.g. ``login_hint``)."""
        meta = await self.load_metadata()
        extra: dict[str, str] = dict(self.config.additional_authorization_parameters)
        for name in self.config.passthrough_authorization_parameters:
            if request_params and name in request_params:
                extra[name] = request_params[name]
        if "openid" in self.config.scopes and session.nonce:
            extra["nonce"] = session.nonce
        if self._use_pkce(meta) and session.code_verifier:
            extra["code_challenge"] = create_s256_code_challenge(session.code_verifier)
            extra["code_challenge_method"] = "S256"
        return prepare_grant_uri(
            meta["authorization_endpoint"], client_id=self.config.client_id, response_type="code",
            redirect_uri=self.callback_url, scope=" ".join(self.config.scopes), state=session.session_id,
            **extra,
        )

    async def complete(self, session: SsoLoginSession, params: Mapping[str, str]) -> RemoteIdentity:
        if "error" in params:
            description = params.get("error_description") or "The identity provider refused the login."
            if params["error"] == "access_denied":
                description = "You declined the login at the identity provider."
            raise SsoError(params["error"], description, 403)
        code = params.get("code")
        if not code:
            raise SsoError("invalid_request", "The identity provider sent no authorization code.")
        meta = await self.load_metadata()
        token = await self._exchange_code(meta, code, session)
        claims: dict[str, Any] = {}
        if "openid" in self.config.scopes:
            claims = await self._validate_id_token(meta, token, session)
        if self.config.uses_userinfo:
            access_token = token.get("access_token")
            if not isinstance(access_token, str):
                raise SsoError("invalid_token", "The identity provider sent no access token.", 502)
            info = await self._get_json(meta["userinfo_endpoint"], "userinfo",
                                        headers={"Authorization": f"Bearer {access_token}"})
            if not isinstance(info, dict):
                raise SsoError("invalid_userinfo", "The identity provider's userinfo is not a JSON object.", 502)
            if claims.get("sub") is not None and info.get("sub") not in (None, claims["sub"]):
                raise SsoError("invalid_userinfo", "The userinfo is for another user than the id_token.", 502)
            claims = {**claims, **info}
        return await self._identity(claims, token)

    async def _identity(self, claims: dict[str, Any], token: dict[str, Any]) -> RemoteIdentity:
        for req in self.config.attribute_requirements:
            if not req.matches(claims):
                raise SsoError("unauthorised", "You are not authorised to log in here.", 403)
        userinfo = UserInfo(claims)
        try:
            remote_user_id = self.mapper.get_remote_user_id(userinfo)
        except Exception as e:
            log.warning("OIDC %s: mapping provider failed on get_remote_user_id: %s", self.idp_id, e)
            raise SsoError("mapping_error", "Could not work out who you are from the identity provider's answer.",
                           500) from None
        if remote_user_id is None or str(remote_user_id) == "":
            raise SsoError("mapping_error", "The identity provider sent no user ID (subject).", 502)
        remote_user_id = str(remote_user_id)

        async def map_attributes(failures: int) -> UserAttributes:
            try:
                raw = await self.mapper.map_user_attributes(userinfo, token, failures)
            except Exception as e:
                log.warning("OIDC %s: mapping provider failed on map_user_attributes: %s", self.idp_id, e)
                raise SsoError("mapping_error", "Could not map your identity to a Matrix account.", 500) from None
            emails = raw.get("emails") or []
            return UserAttributes(
                localpart=raw.get("localpart") or None,
                confirm_localpart=bool(raw.get("confirm_localpart", False)),
                display_name=raw.get("display_name") or None,
                emails=tuple(e for e in emails if isinstance(e, str) and e),
                picture=raw.get("picture") or None,
            )

        extra: dict[str, Any] = {}
        get_extra = getattr(self.mapper, "get_extra_attributes", None)
        if callable(get_extra):
            extra = dict(await get_extra(userinfo, token) or {})
        return RemoteIdentity(self.idp_id, remote_user_id, map_attributes, extra, claims.get("sid"))

    # --- token endpoint ---------------------------------------------------------------------

    def _client_secret(self) -> str | None:
        key_config = self.config.client_secret_jwt_key
        if key_config is None:
            return self.config.client_secret
        now = self._clock_ms() // 1000
        payload = {"iat": now, "exp": now + 600, "iss": self.config.client_id, "sub": self.config.client_id,
                   "aud": self.config.issuer, **key_config.jwt_payload}
        key = import_key(key_config.key, _key_type(key_config.jwt_header["alg"]))
        return jwt.encode(dict(key_config.jwt_header), payload, key, algorithms=[key_config.jwt_header["alg"]])

    async def _exchange_code(self, meta: Mapping[str, Any], code: str, session: SsoLoginSession) -> dict[str, Any]:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.callback_url}
        if self._use_pkce(meta) and session.code_verifier:
            form["code_verifier"] = session.code_verifier
        headers = {"Accept": "application/json"}
        method = self.config.client_auth_method
        secret = self._client_secret()
        if method == "client_secret_basic":
            quote = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731  (RFC 6749 section 2.3.1)
            raw = f"{quote(self.config.client_id)}:{quote(secret or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            form["client_id"] = self.config.client_id
            if method == "client_secret_post":
                form["client_secret"] = secret or ""
        try:
            async with self._http().post(meta["token_endpoint"], data=form, headers=headers,
                                         timeout=_HTTP_TIMEOUT) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            log.warning("OIDC %s: token request failed: %s", self.idp_id, e)
            raise SsoError("server_error", f"Could not reach {self.config.idp_name} to finish the login.", 503) \
                from None
        if not isinstance(body, dict):
            raise SsoError("server_error", "The identity provider's token response is not a JSON object.", 502)
        if status != 200 or "error" in body:
            log.info("OIDC %s: token endpoint refused the code: %s %s", self.idp_id, status, body.get("error"))
            raise SsoError(str(body.get("error", "invalid_grant")),
                           str(body.get("error_description") or "The identity provider refused the login code."),
                           403)
        return body

    async def _validate_id_token(self, meta: Mapping[str, Any], token: Mapping[str, Any],
                                 session: SsoLoginSession) -> dict[str, Any]:
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SsoError("invalid_token", "The identity provider sent no id_token.", 502)
        algorithms = list(meta.get("id_token_signing_alg_values_supported") or ["RS256"])
        algorithms = [a for a in algorithms if a != "none"] or ["RS256"]
        try:
            keys = await self._load_jwks()
            try:
                decoded = jwt.decode(id_token, keys, algorithms=algorithms)
            except JoseError:
                # Perhaps the IdP rotated its keys: fetch them again, once.
                decoded = jwt.decode(id_token, await self._load_jwks(force=True), algorithms=algorithms)
        except (JoseError, ValueError) as e:
            raise SsoError("invalid_token", f"The id_token's signature is invalid: {e}", 403) from None
        claims = dict(decoded.claims)
        self.check_id_token_claims(claims, session)
        return claims

    def check_id_token_claims(self, claims: Mapping[str, Any], session: SsoLoginSession) -> None:
        """OpenID Connect Core 3.1.3.7: issuer, audience, times, nonce."""
        now = self._clock_ms() // 1000
        if not same_issuer(claims.get("iss"), self.config.issuer) and not self.config.skip_verification:
            raise SsoError("invalid_token", "The id_token was issued by someone else.", 403)
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.config.client_id not in audiences:
            raise SsoError("invalid_token", "The id_token is meant for another client.", 403)
        if len(audiences) > 1 and claims.get("azp") not in (None, self.config.client_id):
            raise SsoError("invalid_token", "The id_token's authorized party is another client.", 403)
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp + ID_TOKEN_LEEWAY_S < now:
            raise SsoError("invalid_token", "The id_token has expired.", 403)
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)) or iat - ID_TOKEN_LEEWAY_S > now:
            raise SsoError("invalid_token", "The id_token was issued in the future.", 403)
        nbf = claims.get("nbf")
        if isinstance(nbf, (int, float)) and nbf - ID_TOKEN_LEEWAY_S > now:
            raise SsoError("invalid_token", "The id_token is not valid yet.", 403)
        if session.nonce is not None and claims.get("nonce") != session.nonce:
            raise SsoError("invalid_token", "The id_token's nonce does not match this login (replayed token?).",
                           403)


BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


class LogoutTokenError(Exception):
    """A logout token we must refuse (OIDC Back-Channel Logout 1.0, section 2.6)."""


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWS, unverified: only to find which provider must verify it."""
    import json

    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception:  # noqa: BLE001 - anything unreadable is just not a logout token
        raise LogoutTokenError("the logout token is not a JWT") from None
    if not isinstance(data, dict):
        raise LogoutTokenError("the logout token's payload is not a JSON object")
    return data


async def validate_logout_token(provider: "OidcProvider", token: str) -> tuple[str | None, str | None]:
    """Check a back-channel logout token from ``provider``; returns its (sid, sub).

    Spec: https://openid.net/specs/openid-connect-backchannel-1_0.html#Validation
    """
    meta = await provider.load_metadata()
    algorithms = [a for a in (meta.get("id_token_signing_alg_values_supported") or ["RS256"]) if a != "none"]
    try:
        try:
            decoded = jwt.decode(token, await provider._load_jwks(), algorithms=algorithms or ["RS256"])
        except JoseError:
            decoded = jwt.decode(token, await provider._load_jwks(force=True), algorithms=algorithms or ["RS256"])
    except (JoseError, ValueError) as e:
        raise LogoutTokenError(f"the logout token's signature is invalid: {e}") from None
    claims = dict(decoded.claims)
    c = provider.config
    now = provider._clock_ms() // 1000
    if not same_issuer(claims.get("iss"), c.issuer):
        raise LogoutTokenError("the logout token was issued by someone else")
    aud = claims.get("aud")
    if c.client_id not in (aud if isinstance(aud, list) else [aud]):
        raise LogoutTokenError("the logout token is meant for another client")
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or iat - ID_TOKEN_LEEWAY_S > now:
        raise LogoutTokenError("the logout token has no valid iat")
    exp = claims.get("exp")
    if exp is not None and (not isinstance(exp, (int, float)) or exp + ID_TOKEN_LEEWAY_S < now):
        raise LogoutTokenError("the logout token has expired")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise LogoutTokenError("the logout token has no back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("a logout token must not have a nonce")
    sid, sub = claims.get("sid"), claims.get("sub")
    if not isinstance(sid, str) and not isinstance(sub, str):
        raise LogoutTokenError("the logout token names neither a session (sid) nor a user (sub)")
    return (sid if isinstance(sid, str) else None), (sub if isinstance(sub, str) else None)


def _key_type(alg: str) -> str:
    if alg.startswith("HS"):
        return "oct"
    if alg.startswith(("RS", "PS")):
        return "RSA"
    if alg.startswith("ES"):
        return "EC"
    return "OKP"
