"""TURN servers for calls (Synapse's top-level ``turn_*`` keys).

Spec: https://spec.matrix.org/latest/client-server-api/#get_matrixclientv3voipturnserver.
With ``turn_shared_secret`` the credentials are coturn's "TURN REST API" ones (a time-limited
username and its HMAC); ``turn_username``/``turn_password`` are handed out as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._values import ConfigError, Section, string_item


@dataclass(frozen=True)
class TurnConfig:
    uris: tuple[str, ...] = ()
    shared_secret: str | None = None
    username: str | None = None
    password: str | None = None
    #: How long credentials made with the shared secret last (also the ``ttl`` handed out).
    user_lifetime_ms: int = 3_600_000
    allow_guests: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.uris) and (self.shared_secret is not None or self.username is not None)


def parse_turn_config(root: Section, resolve_path) -> tuple[TurnConfig, list[str]]:
    """The ``turn_*`` keys, and warnings."""
    uris = root.list("turn_uris", [], of=string_item)
    for i, uri in enumerate(uris):
        if not uri.startswith(("turn:", "turns:")):
            raise ConfigError(f"turn_uris[{i}]", f"expected a turn: or turns: URI, got {uri!r}")
    secret = root.str("turn_shared_secret", None)
    secret_path = root.str("turn_shared_secret_path", None)
    if secret is not None and secret_path is not None:
        raise ConfigError("turn_shared_secret_path", "set turn_shared_secret or turn_shared_secret_path, not both")
    if secret_path is not None:
        try:
            with open(resolve_path(secret_path), encoding="utf-8") as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError("turn_shared_secret_path", f"cannot read {secret_path}: {e.strerror}") from None
    if secret == "":
        raise ConfigError("turn_shared_secret_path" if secret_path else "turn_shared_secret", "must not be empty")
    username, password = root.str("turn_username", None), root.str("turn_password", None)
    if (username is None) != (password is None):
        raise ConfigError("turn_password" if username is not None else "turn_username",
                          "turn_username and turn_password go together")
    lifetime = root.duration_ms("turn_user_lifetime", 3_600_000)
    if lifetime < 1000:
        raise ConfigError("turn_user_lifetime", "expected at least 1s")
    warnings = []
    if secret is not None and username is not None:
        warnings.append("turn_username and turn_password are ignored: turn_shared_secret is set")
        username = password = None
    if uris and secret is None and username is None:
        warnings.append("turn_uris is set without turn_shared_secret or turn_username: no TURN server is offered")
    return TurnConfig(uris=tuple(uris), shared_secret=secret, username=username, password=password,
                      user_lifetime_ms=lifetime, allow_guests=root.bool("turn_allow_guests", True)), warnings
