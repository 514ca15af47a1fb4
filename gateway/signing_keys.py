"""The server's signing key file on disk (Synapse's format), loaded at startup.

Format: one line per key, ``ed25519 <version> <unpadded base64 seed>``. The first key
is the one we sign with. If the file is missing it is created, as Synapse does.
"""

from __future__ import annotations

import os
import secrets
import string

from federation.signing import (
    ServerSigningKey,
    format_signing_keys,
    generate_signing_key,
    parse_signing_keys,
)

from .config import ConfigError


def new_key_version() -> str:
    """A short random key version, like Synapse's ``a_XXXX``."""
    alphabet = string.ascii_letters + string.digits
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def write_new_signing_key(path: str) -> ServerSigningKey:
    """Create ``path`` with a new key; refuses to overwrite an existing file."""
    key = generate_signing_key(new_key_version())
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(format_signing_keys([key]))
    return key


def load_signing_key(path: str, *, create: bool = True) -> ServerSigningKey:
    """The key we sign with (the first in the file)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except FileNotFoundError:
        if create:
            return write_new_signing_key(path)
        raise ConfigError("signing_key_path", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("signing_key_path", f"cannot read {path}: {e}") from None
    try:
        keys = parse_signing_keys(text)
    except ValueError as e:
        raise ConfigError("signing_key_path", f"{path}: {e}") from None
    if not keys:
        raise ConfigError("signing_key_path", f"{path} contains no key")
    return keys[0]
