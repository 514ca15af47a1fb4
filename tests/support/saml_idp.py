"""A SAML identity provider for tests: pysaml2's IdP side (``saml2.server.Server``), in-process.

It reads our real AuthnRequests and mints real responses signed with its own key through
xmlsec1: good ones, and the bad kinds a login must refuse (unsigned, signed by an impostor,
tampered, for another request, expired, for another audience).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import re
import urllib.parse
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT
from saml2.server import Server

__all__ = ["TestSamlIdP", "self_signed"]

ENTITY_ID = "https://idp.test/saml/metadata"
SSO_URL = "https://idp.test/saml/sso"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """An RSA key and a self-signed certificate (what SAML IdPs sign with)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TestSamlIdP:
    __test__ = False

    def __init__(self, directory: Path, name: str = "idp"):
        self.dir = directory
        self.key_path, self.cert_path = self_signed(directory, name)
        self.sp_metadata_path: Path | None = None

    def _config(self, with_sp: bool) -> IdPConfig:
        data = {
            "entityid": ENTITY_ID,
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [(SSO_URL, BINDING_HTTP_REDIRECT)]},
                "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI,
                                       "attribute_restrictions": None}},
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            }},
            "key_file": str(self.key_path),
            "cert_file": str(self.cert_path),
        }
        if with_sp:
            data["metadata"] = {"local": [str(self.sp_metadata_path), *self.extra_metadata]}
        return IdPConfig().load(data)

    def write_metadata(self) -> Path:
        """Our IdP's metadata, for the SP's ``metadata.local``."""
        path = self.dir / "idp-metadata.xml"
        xml = create_metadata_string(None, config=self._config(with_sp=False))
        path.write_bytes(xml if isinstance(xml, bytes) else xml.encode())
        return path

    def trust_sp(self, sp_metadata: bytes, also_as: tuple[str, ...] = ()) -> None:
        """Load the SP metadata (from our /_synapse/client/saml2/metadata.xml); ``also_as``: the
        same SP under other entity IDs, so the IdP will mint responses for those audiences too."""
        self.sp_metadata_path = self.dir / "sp-metadata.xml"
        self.sp_metadata_path.write_bytes(sp_metadata)
        self.extra_metadata = []
        for i, entity_id in enumerate(also_as):
            path = self.dir / f"sp-metadata-{i}.xml"
            path.write_bytes(re.sub(rb'entityID="[^"]*"', f'entityID="{entity_id}"'.encode(), sp_metadata, count=1))
            self.extra_metadata.append(str(path))
        self.server = Server(config=self._config(with_sp=True))

    def read_request(self, location: str) -> tuple[str, str, str]:
        """The HTTP-Redirect AuthnRequest in ``location`` -> (request ID, ACS URL, RelayState)."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        req = self.server.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT)
        message = req.message
        return message.id, message.assertion_consumer_service_url, query.get("RelayState", "")

    def response(self, in_response_to: str, acs_url: str, sp_entity_id: str, attributes: dict,
                 *, sign_assertion: bool = True, sign_response: bool = True, name_id: str = "nid-1") -> str:
        """A base64 SAMLResponse, as the HTTP-POST binding carries it."""
        from saml2.saml import NameID

        xml = self.server.create_authn_response(
            identity=attributes, in_response_to=in_response_to, destination=acs_url,
            sp_entity_id=sp_entity_id, name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=name_id),
            authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
            sign_assertion=sign_assertion, sign_response=sign_response,
        )
        return base64.b64encode(str(xml).encode()).decode()

    def error_response(self, in_response_to: str, acs_url: str) -> str:
        """A signed response saying the IdP did not authenticate the user."""
        from saml2.samlp import STATUS_AUTHN_FAILED

        xml = self.server.create_error_response(in_response_to, acs_url,
                                                (STATUS_AUTHN_FAILED, "wrong password"), sign=True)
        return base64.b64encode(str(xml).encode()).decode()

    @contextlib.contextmanager
    def clock_behind(self, minutes: int = 20) -> Iterator[None]:
        """Responses minted inside were issued ``minutes`` ago (with the 5-minute lifetime: expired)."""
        import time as time_module

        import saml2.time_util as time_util

        real_datetime, real_gmtime = time_util.datetime, time_module.gmtime
        shift = datetime.timedelta(minutes=minutes)

        class Past(real_datetime):
            @classmethod
            def now(cls, tz=None):
                return real_datetime.now(tz) - shift

        def gmtime(*args):
            return real_gmtime(*args) if args else real_gmtime(time_module.time() - shift.total_seconds())

        time_util.datetime, time_module.gmtime = Past, gmtime
        try:
            yield
        finally:
            time_util.datetime, time_module.gmtime = real_datetime, real_gmtime


__all__ += ["BINDING_HTTP_POST"]
