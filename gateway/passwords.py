"""Password hashing (bcrypt, compatible with the hashes Synapse stores)."""

from __future__ import annotations

import bcrypt

#: Synapse's default cost.
BCRYPT_ROUNDS = 12


def _secret(password: str, pepper: str) -> bytes:
    """What bcrypt hashes: the password, then ``password_config.pepper`` (as Synapse does),
    cut at bcrypt's 72 bytes as bcrypt before 5.0 did silently (so that hashes made that
    way, by us or by Synapse, still match; bcrypt 5 raises instead)."""
    return (password + pepper).encode("utf-8")[:72]


def hash_password(password: str, rounds: int = BCRYPT_ROUNDS, pepper: str = "") -> str:
    return bcrypt.hashpw(_secret(password, pepper), bcrypt.gensalt(rounds)).decode("ascii")


def check_password(password: str, stored_hash: str | None, pepper: str = "") -> bool:
    if not stored_hash:
        return False
    try:
        return bcrypt.checkpw(_secret(password, pepper), stored_hash.encode("ascii"))
    except ValueError:
        return False
