"""Password hashes: bcrypt with ``password_config.pepper`` as Synapse makes them, checked by
Synapse's own ``hash_password`` tool (from PyPI, in .cache/synapse-venv)."""

from __future__ import annotations

import subprocess

import yaml

from gateway.config import parse_config
from gateway.passwords import check_password, hash_password
from tests.support.synapse import ensure_synapse_installed


def test_a_hash_made_by_synapse_with_a_pepper_is_checked_with_the_same_pepper(tmp_path):
    config = tmp_path / "synapse.yaml"
    config.write_text(yaml.safe_dump({"bcrypt_rounds": 4, "password_config": {"pepper": "ground black"}}))
    tool = ensure_synapse_installed().parent / "hash_password"
    made = subprocess.run([str(tool), "-c", str(config), "-p", "open sesame"], check=True, capture_output=True,
                          text=True).stdout.strip()
    assert made.startswith("$2b$04$")
    assert check_password("open sesame", made, pepper="ground black")
    assert not check_password("open sesame", made)
    assert not check_password("open sesame", made, pepper="other pepper")
    assert not check_password("open sesamE", made, pepper="ground black")


def test_ours_take_the_pepper_and_long_passwords_are_cut_at_72_bytes_as_bcrypt_always_did():
    ours = hash_password("open sesame", 4, pepper="p")
    assert check_password("open sesame", ours, pepper="p") and not check_password("open sesame", ours)
    long = "ü" * 50  # 100 bytes: bcrypt 5 would raise; bcrypt reads 72 bytes anyway
    hashed = hash_password(long, 4)
    assert check_password(long, hashed) and check_password(long + "more", hashed)
    assert not check_password("ü" * 35, hashed)


def test_the_pepper_comes_from_password_config():
    config = parse_config({"server_name": "example.com", "password_config": {"pepper": "salt-and"}})
    assert config.password_pepper == "salt-and"
    assert not [w for w in config.warnings if "password_config" in w]
    assert parse_config({"server_name": "example.com"}).password_pepper == ""
