"""The TLS diagnosis over plain data: name matching, several problems at once, the words."""

from __future__ import annotations

import pytest

from federation.tester_tls import CODES, certificate_covers, diagnose_tls, name_matches

NOW = 1_800_000_000.0


@pytest.mark.parametrize("pattern, name, expected", [
    ("example.com", "example.com", True),
    ("Example.COM", "example.com.", True),
    ("*.example.com", "matrix.example.com", True),
    ("*.example.com", "example.com", False),          # a wildcard needs a label
    ("*.example.com", "a.b.example.com", False),      # ... exactly one
    ("*.com", "example.com", False),                  # not across a public suffix-like single label
    ("m*.example.com", "matrix.example.com", False),  # only a whole-label wildcard
    ("example.com", "other.com", False),
])
def test_name_matches(pattern, name, expected):
    assert name_matches(pattern, name) is expected


def test_certificate_covers_ip_addresses_only_exactly():
    assert certificate_covers(["127.0.0.1"], "127.0.0.1")
    assert not certificate_covers(["127.0.0.2", "*.0.0.1"], "127.0.0.1")
    assert certificate_covers(["::1"], "0:0::1")


def _leaf(**fields):
    return {"SubjectCommonName": "matrix.example.com", "IssuerCommonName": "R3", "DNSNames": ["matrix.example.com"],
            "NotBefore": "2026-01-01T00:00:00+00:00", "NotAfter": "2027-01-01T00:00:00+00:00",
            "NotBeforeTs": NOW - 86400, "NotAfterTs": NOW + 86400, "IsCA": False, "SelfIssued": False, **fields}


def _facts(chain, **fields):
    return {"Address": "192.0.2.1:8448", "ExpectedName": "example.com", "SNI": "example.com", "Failure": None,
            "PlainHTTP": None, "WithoutSNI": None, "Chain": chain, "VerifyCode": None, "VerifyMessage": None,
            "Version": "TLSv1.3", **fields}


def test_every_problem_is_listed_first_one_leads():
    facts = _facts([_leaf(NotAfterTs=NOW - 10, NotAfter="2027-01-14T00:00:00+00:00")], VerifyCode=62,
                   VerifyMessage="Hostname mismatch")
    result = diagnose_tls(facts, NOW)
    assert [p["Code"] for p in result["Problems"]] == ["expired", "name_mismatch"]
    assert result["Code"] == "expired" and "expired on 2027-01-14" in result["Words"]
    assert "for matrix.example.com, not for example.com" in result["Problems"][1]["Words"]
    assert "never the SRV target" in result["Problems"][1]["Fix"]


def test_ok_says_so():
    result = diagnose_tls(_facts([_leaf(DNSNames=["example.com"])]), NOW)
    assert result["Code"] == "ok" and result["Problems"] == [] and "TLS works (TLSv1.3)" in result["Words"]


def test_chain_verdicts_from_openssl_codes():
    leaf = _leaf(DNSNames=["example.com"])
    ca = _leaf(SubjectCommonName="Private CA", IssuerCommonName="Private CA", IsCA=True, SelfIssued=True,
               DNSNames=[])
    assert diagnose_tls(_facts([leaf], VerifyCode=20), NOW)["Code"] == "missing_intermediate"
    assert diagnose_tls(_facts([leaf, ca], VerifyCode=19), NOW)["Code"] == "unknown_root"
    intermediate = _leaf(SubjectCommonName="Sub CA", IssuerCommonName="Hidden root", IsCA=True, DNSNames=[])
    assert diagnose_tls(_facts([leaf, intermediate], VerifyCode=20), NOW)["Code"] == "unknown_root"
    assert diagnose_tls(_facts([_leaf(DNSNames=["example.com"], SelfIssued=True)], VerifyCode=18), NOW)["Code"] == \
        "self_signed"
    assert diagnose_tls(_facts([leaf], VerifyCode=99, VerifyMessage="odd"), NOW)["Code"] == "verify_failed"


def test_failures_name_the_stage_and_duration():
    for kind, stage, code in (("timeout", "connect", "connect_timeout"), ("refused", "connect", "connection_refused"),
                              ("timeout", "handshake", "handshake_timeout"), ("tls_error", "handshake", "not_tls"),
                              ("blocked", "blocked", "blocked")):
        failure = {"Stage": stage, "Kind": kind, "Message": "m", "Seconds": 4.98, "Timeout": 5.0}
        result = diagnose_tls(_facts([], Failure=failure), NOW)
        assert result["Code"] == code and code in CODES
        if kind == "timeout":
            assert "5.0 s" in result["Words"]
    plain = diagnose_tls(_facts([], Failure={"Stage": "handshake", "Kind": "tls_error", "Message": "wrong version"},
                                PlainHTTP="HTTP/1.1 400 Bad Request"), NOW)
    assert plain["Code"] == "plain_http" and "'HTTP/1.1 400 Bad Request'" in plain["Words"]
    assert "listen 8448 ssl" in plain["Fix"]


def test_every_code_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "reverse-proxy.md").read_text()
    assert [code for code in CODES if f"`{code}`" not in doc] == []
