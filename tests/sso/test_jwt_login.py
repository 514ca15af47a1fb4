"""org.matrix.login.jwt: every kind of bad token is refused."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config.sso import JwtConfig
from sso.jwt_login import LEEWAY_S, JwtLoginError, validate_login_jwt

SECRET = "a-shared-secret-of-at-least-32-bytes!"
NOW = 1_700_000_000
CONFIG = JwtConfig(SECRET, "HS256", "sub", "name", None, None)


def token(claims, key=SECRET, alg="HS256", headers=None):
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def b64(d: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def test_good_token():
    c = validate_login_jwt(token({"sub": "alice", "name": "Alice", "exp": NOW + 60, "iat": NOW}), CONFIG, NOW)
    assert (c.subject, c.display_name) == ("alice", "Alice")


@pytest.mark.parametrize("bad, why", [
    (lambda: token({"sub": "a"}, key="another-secret-of-at-least-32-bytes!!"), "Signature verification failed"),
    (lambda: b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "a"}) + ".", "algorithm must be HS256"),
    (lambda: token({"sub": "a"}, key=SECRET * 2, alg="HS512"), "algorithm must be HS256"),
    (lambda: token({"sub": "a", "exp": NOW - LEEWAY_S - 1}), "expired"),
    (lambda: token({"sub": "a", "nbf": NOW + LEEWAY_S + 5}), "not yet valid"),
    (lambda: token({"sub": "a", "iat": NOW + LEEWAY_S + 5}), "issued in the future"),
    (lambda: token({"sub": "a", "exp": "soon"}), "must be a number"),
    (lambda: token({"sub": "a", "aud": "someone"}), "audience"),  # aud present, none configured
    (lambda: token({"name": "no subject"}), "'sub'"),
    (lambda: token({"sub": 42}), "(?i)subject"),
    (lambda: "not.a.jwt", "JWT validation failed"),
    (lambda: "", "missing"),
])
def test_bad_tokens(bad, why):
    with pytest.raises(JwtLoginError, match=why):
        validate_login_jwt(bad(), CONFIG, NOW)


def test_small_leeway_accepts_slight_skew():
    validate_login_jwt(token({"sub": "a", "exp": NOW - LEEWAY_S + 5, "iat": NOW + 5}), CONFIG, NOW)


def test_issuer_and_audiences():
    config = JwtConfig(SECRET, "HS256", "sub", None, "https://issuer", ("app1", "app2"))
    validate_login_jwt(token({"sub": "a", "iss": "https://issuer", "aud": "app2"}), config, NOW)
    for claims, why in [({"sub": "a", "aud": "app1"}, "iss"), ({"sub": "a", "iss": "https://issuer"}, "aud"),
                        ({"sub": "a", "iss": "https://evil", "aud": "app1"}, "issuer"),
                        ({"sub": "a", "iss": "https://issuer", "aud": "app3"}, "(?i)audience")]:
        with pytest.raises(JwtLoginError, match=why):
            validate_login_jwt(token(claims), config, NOW)


def test_rs256_with_public_key_and_hs256_confusion_refused():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    config = JwtConfig(public_pem, "RS256", "user", None, None, None)
    assert validate_login_jwt(token({"user": "bob"}, key=private, alg="RS256"), config, NOW).subject == "bob"
    with pytest.raises(JwtLoginError):  # an HMAC "signed" with the public key is not accepted
        validate_login_jwt(b64({"alg": "HS256"}) + "." + b64({"user": "bob"}) + ".x", config, NOW)
