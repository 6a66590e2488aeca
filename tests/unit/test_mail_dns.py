"""The DNS checks of `nurture doctor`, against a real DNS server on loopback (tests/dns_stub.py)."""

from __future__ import annotations

import base64
import subprocess

import pytest

from dns_stub import DnsStub, txt
from nurture.sending.mail_dns import (
    DnsFailure,
    DnsLookup,
    Level,
    check_dkim,
    check_dmarc,
    check_mx,
    check_spf,
    parse_nameserver,
    public_key_base64,
)

D = "clinic.example"


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory):
    """(PEM private key, base64 SubjectPublicKeyInfo as openssl writes it)."""
    folder = tmp_path_factory.mktemp("dkim")
    subprocess.run(["openssl", "genrsa", "-out", str(folder / "k.pem"), "2048"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(folder / "k.pem"), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return (folder / "k.pem").read_bytes(), base64.b64encode(der).decode()


def lookup_of(zone):
    stub = DnsStub(zone).__enter__()
    return stub, DnsLookup(("127.0.0.1", stub.port), timeout=2)


@pytest.fixture
def dns():
    stubs = []

    def serve(zone):
        stub, lookup = lookup_of(zone)
        stubs.append(stub)
        return lookup

    yield serve
    for stub in stubs:
        stub.__exit__()


def test_parse_nameserver():
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_nameserver("[::1]:54") == ("::1", 54)
    with pytest.raises(ValueError, match="not a port"):
        parse_nameserver("127.0.0.1:dns")
    with pytest.raises(ValueError, match="not a port"):
        parse_nameserver("127.0.0.1:70000")


@pytest.mark.parametrize("records, level, words", [
    (['"v=spf1 include:_spf.relay.example -all"'], Level.ok, "2 DNS lookups"),
    (['"v=spf1 ip4:192.0.2.0/24 ~all"', '"google-site-verification=x"'], Level.ok, "0 DNS lookups"),
    ([], Level.error, "no SPF record"),
    (['"v=spf1 -all"', '"v=spf1 mx -all"'], Level.error, "2 SPF records"),
    (['"v=spf1 mx +all"'], Level.warning, "+all"),
    (['"v=spf1 mx ?all"'], Level.warning, "does not end in -all or ~all"),
    (['"v=spf1 " "a mx a:x.example mx:y.example include:_spf.relay.example exists:%{i}.z.example ptr a/24 '
      'mx/24 include:n.example -all"'], Level.error, "over SPF's limit of 10"),
])
def test_spf(dns, records, level, words):
    lookup = dns({(D, "TXT"): records, (D, "A"): ["192.0.2.5"],
                  ("_spf.relay.example", "TXT"): ['"v=spf1 include:_spf2.relay.example -all"'],
                  ("_spf2.relay.example", "TXT"): ['"v=spf1 ip4:198.51.100.0/24 -all"']})
    finding = check_spf(lookup, D)
    assert finding.level is level, finding
    assert words in finding.detail


def test_dkim_key_matches_mismatches_or_is_missing(dns, rsa_key):
    pem, published = rsa_key
    assert public_key_base64(__import__("dkim.crypto").crypto.parse_pem_private_key(pem)) == published
    name = f"s1._domainkey.{D}"
    # A long TXT value comes in 255-byte strings; they are joined before reading.
    assert check_dkim(dns({(name, "TXT"): [txt(f"v=DKIM1; k=rsa; p={published}")]}), "s1", D, pem).level is Level.ok
    other = published[:60] + ("A" if published[60] != "A" else "B") + published[61:]
    wrong = check_dkim(dns({(name, "TXT"): [txt(f"v=DKIM1; p={other}")]}), "s1", D, pem)
    assert wrong.level is Level.error and ("does not match" in wrong.detail or "not an RSA" in wrong.detail)
    missing = check_dkim(dns({(D, "TXT"): ['"v=spf1 -all"']}), "s1", D, pem)
    assert missing.level is Level.error and published in missing.detail  # says what to publish
    revoked = check_dkim(dns({(name, "TXT"): ['"v=DKIM1; p="']}), "s1", D, pem)
    assert revoked.level is Level.error and "revokes" in revoked.detail
    assert check_dkim(dns({}), "s1", D, b"not a key").level is Level.error


def test_dkim_a_different_real_key_does_not_match(dns, rsa_key, tmp_path):
    pem, _ = rsa_key
    subprocess.run(["openssl", "genrsa", "-out", str(tmp_path / "other.pem"), "1024"], check=True, capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(tmp_path / "other.pem"), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    finding = check_dkim(dns({(f"s1._domainkey.{D}", "TXT"): [txt(f"v=DKIM1; p={base64.b64encode(der).decode()}")]}),
                         "s1", D, pem)
    assert finding.level is Level.error and "does not match NURTURE_DKIM_KEY_FILE" in finding.detail


@pytest.mark.parametrize("zone, level, words", [
    ({("_dmarc." + D, "TXT"): ['"v=DMARC1; p=reject; rua=mailto:d@clinic.example"']}, Level.ok, "p=reject"),
    ({("_dmarc." + D, "TXT"): ['"v=DMARC1; p=none"']}, Level.warning, "p=none"),
    ({("_dmarc." + D, "TXT"): ['"v=DMARC1; p=maybe"']}, Level.error, "not a valid policy"),
    ({}, Level.error, "no DMARC record"),
    ({("_dmarc." + D, "TXT"): ['"v=DMARC1; p=none"', '"v=DMARC1; p=reject"']}, Level.error, "2 DMARC records"),
])
def test_dmarc(dns, zone, level, words):
    finding = check_dmarc(dns(zone), D)
    assert finding.level is level and words in finding.detail, finding


def test_dmarc_of_a_subdomain_falls_back_to_the_parent_and_its_sp(dns):
    finding = check_dmarc(dns({("_dmarc." + D, "TXT"): ['"v=DMARC1; p=reject; sp=quarantine"']}), "mail." + D)
    assert finding.level is Level.ok and "p=quarantine at _dmarc.clinic.example" in finding.detail


def test_mx(dns):
    assert "mx1.clinic.example" in check_mx(dns({(D, "MX"): ["10 mx1.clinic.example."]}), D).detail
    assert check_mx(dns({(D, "A"): ["192.0.2.5"]}), D).level is Level.warning
    assert check_mx(dns({(D, "TXT"): ['"x"']}), D).level is Level.error
    assert "null MX" in check_mx(dns({(D, "MX"): ["0 ."]}), D).detail


def test_a_dns_server_that_does_not_answer_is_a_failure_not_a_missing_record():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        lookup = DnsLookup(silent.getsockname(), timeout=0.5)
        with pytest.raises(DnsFailure, match="no answer"):
            check_spf(lookup, D)
