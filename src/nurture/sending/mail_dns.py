"""The DNS records that decide whether our mail lands in the inbox: SPF, DKIM, DMARC and MX.

Each check reads the records through a :class:`DnsLookup` (dnspython, pointed at the system's
resolvers or at one given server) and returns one :class:`Finding`: ok, warning or error, with
what to do. Nothing here sends mail or changes anything.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
from dataclasses import dataclass
from enum import Enum

import dns.exception
import dns.name
import dns.resolver

RSA_ENCRYPTION = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # OID 1.2.840.113549.1.1.1
SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: more DNS-querying terms than this is a permanent error
_LOOKUP_TERMS = re.compile(r"^[+?~-]?(include:|a\b|a:|a/|mx\b|mx:|mx/|ptr\b|ptr:|exists:|redirect=)", re.IGNORECASE)


class Level(Enum):
    ok = "ok"
    warning = "warning"
    error = "error"


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: what was checked, how it stands, and what to do."""

    name: str
    level: Level
    detail: str


class DnsFailure(Exception):
    """The DNS server did not answer (timeout, SERVFAIL): nothing can be said about the record."""


def parse_nameserver(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` (``[::1]:53`` for IPv6) as (IP address, port); port 53 by default."""
    host, port = value.strip(), "53"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not a port: {port!r} (give HOST:PORT such as 127.0.0.1:53)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = socket.getaddrinfo(host, None)[0][4][0]
        except OSError:
            raise ValueError(f"cannot resolve the DNS server's name {host!r}") from None
    return host, int(port)


class DnsLookup:
    """Reads TXT, MX and A records, from the system's resolvers or from ``nameserver``."""

    def __init__(self, nameserver: tuple[str, int] | None = None, *, timeout: float = 4.0) -> None:
        self.resolver = dns.resolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            self.resolver.nameservers = [nameserver[0]]
            self.resolver.port = nameserver[1]
        self.resolver.lifetime = timeout

    def records(self, name: str, kind: str) -> list:
        """The answer's records; [] when the name or the type does not exist."""
        try:
            return list(self.resolver.resolve(name, kind, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout:
            raise DnsFailure(f"no answer for {name} {kind} within {self.resolver.lifetime:g} s from "
                             f"{self.servers}") from None
        except dns.resolver.NoNameservers:
            raise DnsFailure(f"{self.servers} could not answer for {name} {kind} (SERVFAIL or refused)") from None

    @property
    def servers(self) -> str:
        return ", ".join(f"{ns}:{self.resolver.port}" for ns in self.resolver.nameservers)

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records(name, "TXT")]


def spf_records(lookup: DnsLookup, domain: str) -> list[str]:
    return [t for t in lookup.txt(domain) if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def check_spf(lookup: DnsLookup, domain: str) -> Finding:
    """One ``v=spf1`` record ending in ``-all`` or ``~all``, within the 10-lookup limit."""
    name = f"SPF {domain}"
    records = spf_records(lookup, domain)
    if not records:
        return Finding(name, Level.error, f"no SPF record: publish a TXT record at {domain} such as "
                                          "\"v=spf1 include:<your relay's SPF domain> -all\"")
    if len(records) > 1:
        return Finding(name, Level.error, f"{len(records)} SPF records (receivers treat that as a permanent error): "
                                          "merge them into one")
    record = records[0]
    terms = record.split()[1:]
    final = terms[-1].lower() if terms else ""
    lookups = _count_lookups(lookup, record, {domain})
    if lookups > SPF_LOOKUP_LIMIT:
        return Finding(name, Level.error, f"{record!r} needs {lookups} DNS lookups, over SPF's limit of "
                                          f"{SPF_LOOKUP_LIMIT}: receivers fail it; flatten some includes")
    if final in ("all", "+all"):
        return Finding(name, Level.warning, f"{record!r} ends in +all, which lets anyone send as {domain}: "
                                            "end it in -all (or ~all)")
    if final not in ("-all", "~all") and not any(t.lower().startswith("redirect=") for t in terms):
        return Finding(name, Level.warning, f"{record!r} does not end in -all or ~all: mail from elsewhere "
                                            "is not marked as forged")
    return Finding(name, Level.ok, f"{record!r} ({lookups} DNS lookup{'' if lookups == 1 else 's'})")


def _count_lookups(lookup: DnsLookup, record: str, seen: set[str], depth: int = 0) -> int:
    """The DNS-querying terms of ``record`` and, recursively, of its includes and redirect."""
    count = 0
    for term in record.split()[1:]:
        if not _LOOKUP_TERMS.match(term):
            continue
        count += 1
        target = term.partition(":")[2] if ":" in term else term.partition("=")[2]
        if term.lstrip("+?~-").lower().startswith(("include:", "redirect=")) and target not in seen and depth < 10:
            seen.add(target)
            try:
                nested = spf_records(lookup, target)
            except DnsFailure:
                nested = []
            if len(nested) == 1:
                count += _count_lookups(lookup, nested[0], seen, depth + 1)
    return count


def check_dkim(lookup: DnsLookup, selector: str, domain: str, private_key_pem: bytes) -> Finding:
    """The public key published at ``<selector>._domainkey.<domain>`` is the one of our private key."""
    import dkim.crypto

    name = f"DKIM {selector}._domainkey.{domain}"
    try:
        ours = dkim.crypto.parse_pem_private_key(private_key_pem)
    except Exception:  # noqa: BLE001 - dkimpy raises several kinds for a malformed key
        return Finding(name, Level.error, "NURTURE_DKIM_KEY_FILE does not hold an RSA private key in PEM format")
    records = [t for t in lookup.txt(f"{selector}._domainkey.{domain}") if "p=" in t]
    if not records:
        return Finding(name, Level.error, f"no DKIM key published: add a TXT record at {selector}._domainkey.{domain} "
                                          f"with \"v=DKIM1; k=rsa; p={public_key_base64(ours)}\"")
    tags = dict(part.strip().partition("=")[::2] for part in records[0].split(";") if "=" in part)
    published = re.sub(r"\s+", "", tags.get("p", ""))
    if not published:
        return Finding(name, Level.error, "the published key is empty (p=), which revokes it: publish ours")
    try:
        theirs = dkim.crypto.parse_public_key(base64.b64decode(published))
    except Exception:  # noqa: BLE001
        return Finding(name, Level.error, "the published p= is not an RSA public key: publish ours")
    if (theirs["modulus"], theirs["publicExponent"]) != (ours["modulus"], ours["publicExponent"]):
        return Finding(name, Level.error, "the published key does not match NURTURE_DKIM_KEY_FILE: signatures will "
                                          f"fail; publish p={public_key_base64(ours)}")
    return Finding(name, Level.ok, f"published key matches NURTURE_DKIM_KEY_FILE ({ours['modulus'].bit_length()} bits)")


def public_key_base64(private_key: dict) -> str:
    """The p= value for an RSA private key as dkimpy parses it: SubjectPublicKeyInfo, base64."""
    def der(tag: int, content: bytes) -> bytes:  # dkimpy's own encoder fails on lengths over 255
        size = len(content)
        length = bytes([size]) if size < 128 else bytes([0x80 | (size.bit_length() + 7) // 8]) + size.to_bytes(
            (size.bit_length() + 7) // 8, "big")
        return bytes([tag]) + length + content

    def integer(n: int) -> bytes:  # big-endian, with a leading zero byte when the top bit is set
        return der(0x02, n.to_bytes((n.bit_length() + 8) // 8, "big"))

    rsa = der(0x30, integer(private_key["modulus"]) + integer(private_key["publicExponent"]))
    algorithm = der(0x30, der(0x06, RSA_ENCRYPTION) + der(0x05, b""))
    spki = der(0x30, algorithm + der(0x03, b"\x00" + rsa))
    return base64.b64encode(spki).decode()


def check_dmarc(lookup: DnsLookup, domain: str) -> Finding:
    """A ``v=DMARC1`` record at ``_dmarc.<domain>`` or its parent domains, with its policy."""
    name = f"DMARC {domain}"
    labels = domain.split(".")
    for start in range(len(labels) - 1):
        where = ".".join(labels[start:])
        records = [t for t in lookup.txt(f"_dmarc.{where}") if t.replace(" ", "").lower().startswith("v=dmarc1")]
        if not records:
            continue
        if len(records) > 1:
            return Finding(name, Level.error, f"{len(records)} DMARC records at _dmarc.{where}: keep one")
        tags = {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in records[0].split(";"))}
        policy = tags.get("sp" if start and "sp" in tags else "p", "").lower()
        shown = f"policy p={policy or '?'} at _dmarc.{where}"
        if policy == "none":
            return Finding(name, Level.warning, f"{shown}: monitoring only; once reports show your mail passing, "
                                                "move to p=quarantine")
        if policy not in ("quarantine", "reject"):
            return Finding(name, Level.error, f"{shown}: not a valid policy (none, quarantine or reject)")
        return Finding(name, Level.ok, shown)
    return Finding(name, Level.error, f"no DMARC record: publish a TXT record at _dmarc.{domain} such as "
                                      f"\"v=DMARC1; p=none; rua=mailto:dmarc@{domain}\" (Gmail and Yahoo require one "
                                      "for bulk senders)")


def check_mx(lookup: DnsLookup, domain: str) -> Finding:
    """The bounce address's domain receives mail: MX records, or at least an address (A/AAAA)."""
    name = f"MX {domain}"
    records = lookup.records(domain, "MX")
    if any(r.exchange == dns.name.root for r in records):  # RFC 7505's "0 ."
        return Finding(name, Level.error, f"a null MX: {domain} receives no mail, so bounces are lost")
    if records:
        hosts = [r.exchange.to_text(omit_final_dot=True) for r in sorted(records, key=lambda r: r.preference)]
        return Finding(name, Level.ok, "mail for bounces goes to " + ", ".join(hosts))
    if lookup.records(domain, "A") or lookup.records(domain, "AAAA"):
        return Finding(name, Level.warning, f"no MX record; mail falls back to {domain}'s own address: add an MX")
    return Finding(name, Level.error, f"no MX or address record: bounces to {domain} cannot be delivered "
                                      "and some receivers refuse the mail")
