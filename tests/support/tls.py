"""A throwaway certificate authority and server certificates for loopback TLS tests."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class IssuedCert:
    cert_path: Path
    key_path: Path


class TestCA:
    __test__ = False  # not a pytest test class

    """Issues certificates for names and IP addresses; ``ca_path`` is the PEM to trust.

    ``parent``: make this an intermediate CA of ``parent`` (``parent.intermediate()``);
    its certificates then chain through it to the parent's root, which is what to trust.
    """

    def __init__(self, directory: Path, *, parent: "TestCA | None" = None, name: str = "Gateway test CA"):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parent = parent
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer = parent.cert.subject if parent else subject
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(parent.key if parent else self.key, hashes.SHA256())
        )
        if parent is not None:
            self.ca_path = parent.ca_path
        else:
            self.ca_path = self.dir / "ca.pem"
            self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def intermediate(self, name: str = "Gateway test intermediate") -> "TestCA":
        """An intermediate CA under this one (its own directory)."""
        return TestCA(self.dir / name.replace(" ", "-"), parent=self, name=name)

    def _chain(self) -> list[x509.Certificate]:
        return [self.cert] + (self.parent._chain() if self.parent else [])

    def issue(self, *names: str, valid_days: int = 30, filename: str | None = None, not_before_days: int = 1,
              with_chain: bool = True) -> IssuedCert:
        """A server certificate for ``names``, valid from ``not_before_days`` ago (negative: in
        the future) for ``valid_days`` from now (negative: expired). The file holds the chain
        up to the root unless ``with_chain`` is false (then only the leaf: a missing
        intermediate, when this CA is one)."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=not_before_days))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = filename or names[0].replace(":", "_")
        cert_path, key_path = self.dir / f"{stem}.crt", self.dir / f"{stem}.key"
        chain = self._chain() if with_chain else []
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain]))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return IssuedCert(cert_path, key_path)


async def serve_tls(app, ca: TestCA, *names: str, port: int | None = None):
    """Serve an aiohttp ``app`` over TLS on 127.0.0.1 with a certificate from ``ca`` for
    ``names``; returns ``(runner, port)``. Call ``await runner.cleanup()`` when done."""
    import ssl

    from aiohttp import web

    from tests.conftest import free_port

    port = port or free_port()
    cert = ca.issue(*names, filename=f"serve-{port}")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert.cert_path, cert.key_path)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner, port
