"""``org.matrix.login.jwt``: log in with a JSON Web Token signed by a trusted issuer.

The token's ``subject_claim`` (default ``sub``) is the localpart; the account is created on
first login. Only the configured algorithm is accepted (so never ``none``), ``iss`` and
``aud`` are required when configured, an ``aud`` claim without configured audiences is
refused, and ``exp``/``nbf``/``iat`` are checked when present, with a small leeway.
Every failure is ``M_FORBIDDEN`` (403).

Config: Synapse's ``jwt_config``; docs: https://element-hq.github.io/synapse/latest/jwt.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from gateway.config.sso import JwtConfig

__all__ = ["JwtLoginError", "JwtClaims", "validate_login_jwt", "LOGIN_TYPE", "LEEWAY_S"]

LOGIN_TYPE = "org.matrix.login.jwt"
#: Clock skew allowed on exp, nbf and iat.
LEEWAY_S = 30


class JwtLoginError(Exception):
    """The token is not acceptable; the message says why (safe to show the client)."""


@dataclass(frozen=True)
class JwtClaims:
    subject: str
    display_name: str | None
    claims: dict[str, Any]


def validate_login_jwt(token: Any, config: JwtConfig, now_s: float) -> JwtClaims:
    """Check signature, algorithm, issuer, audience and times; return the subject."""
    import jwt as pyjwt  # here, not at module level: only servers with jwt_config pay its memory

    if not isinstance(token, str) or not token:
        raise JwtLoginError("Token field for JWT is missing")
    try:
        header = pyjwt.get_unverified_header(token)
    except pyjwt.PyJWTError as e:
        raise JwtLoginError(f"JWT validation failed: {e}") from None
    if header.get("alg") != config.algorithm:
        raise JwtLoginError(f"JWT validation failed: the algorithm must be {config.algorithm}")
    try:
        claims = pyjwt.decode(
            token,
            config.secret,
            algorithms=[config.algorithm],
            issuer=config.issuer,
            audience=list(config.audiences) if config.audiences is not None else None,
            # Times are checked below against the given clock; aud is always checked:
            # a token for some audience is refused when we have none configured.
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": True,
                     "verify_iss": config.issuer is not None,
                     "require": (["iss"] if config.issuer else []) + (["aud"] if config.audiences else [])},
        )
    except pyjwt.PyJWTError as e:
        raise JwtLoginError(f"JWT validation failed: {e}") from None
    _check_times(claims, now_s)
    subject = claims.get(config.subject_claim)
    if not isinstance(subject, str) or not subject:
        raise JwtLoginError(f"Invalid JWT: no string {config.subject_claim!r} claim")
    display_name = None
    if config.display_name_claim:
        value = claims.get(config.display_name_claim)
        display_name = value if isinstance(value, str) and value else None
    return JwtClaims(subject, display_name, claims)


def _check_times(claims: Mapping[str, Any], now_s: float) -> None:
    def number(name: str) -> float | None:
        value = claims.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise JwtLoginError(f"JWT validation failed: {name} must be a number")
        return float(value)

    exp, nbf, iat = number("exp"), number("nbf"), number("iat")
    if exp is not None and exp <= now_s - LEEWAY_S:
        raise JwtLoginError("JWT validation failed: the token has expired")
    if nbf is not None and nbf > now_s + LEEWAY_S:
        raise JwtLoginError("JWT validation failed: the token is not yet valid (nbf)")
    if iat is not None and iat > now_s + LEEWAY_S:
        raise JwtLoginError("JWT validation failed: the token was issued in the future (iat)")


async def jwt_login(hs: Any, token: Any) -> str:
    """``POST /login`` with ``org.matrix.login.jwt``: the user ID, registered on first login.

    Raises ``M_FORBIDDEN`` (403) for any token problem, ``M_USER_DEACTIVATED`` for a
    deactivated account.
    """
    from gateway.http import Codes, MatrixError
    from gateway.storage.users import UserExistsError

    try:
        claims = validate_login_jwt(token, hs.config.sso.jwt_config, hs.clock_ms() / 1000)
    except JwtLoginError as e:
        raise MatrixError(403, Codes.FORBIDDEN, str(e)) from None
    user_id = f"@{claims.subject}:{hs.server_name}"
    user = await hs.auth.users.get_user(user_id)
    if user is None:
        try:
            user_id = await hs.usernames.check(claims.subject)
            await hs.auth.users.create_user(user_id, password_hash=None, created_ts=hs.clock_ms(),
                                            displayname=claims.display_name)
        except UserExistsError:
            pass  # registered concurrently
        except MatrixError as e:
            raise MatrixError(403, Codes.FORBIDDEN, f"Invalid JWT subject: {e.error}") from None
        user = await hs.auth.users.get_user(user_id)
    if user is None or user.deactivated:
        raise MatrixError(403, Codes.USER_DEACTIVATED, "This account has been deactivated")
    return user_id
