"""International addresses on the wire (RFC 6530-6533).

Addresses are stored as the person typed them, normalised (``zoë@bücher.example.com``). On the
wire the domain always travels as IDNA A-labels (``xn--bcher-kva.example.com``), which every
server understands; a non-ASCII local part has no ASCII form at all, so it can only travel under
the SMTPUTF8 extension, with the message's headers in UTF-8 (RFC 6532).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import idna


class UnencodableAddress(ValueError):
    """An address whose domain has no IDNA form: it can be stored, but never sent to."""


@dataclass(frozen=True)
class WireAddress:
    text: str  # local@A-label-domain
    needs_smtputf8: bool  # the local part is not ASCII


@lru_cache(maxsize=4096)
def wire_address(address: str) -> WireAddress:
    """The form of ``address`` for SMTP envelopes and headers."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise UnencodableAddress(f"not an address: {address!r}")
    return WireAddress(f"{local}@{ascii_domain(domain)}", not local.isascii())


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """IDNA 2008 with UTS 46 mapping, as email-validator checks it at signup (Python's own
    ``idna`` codec is IDNA 2003, which maps some names to other domains: ``ß`` becomes ``ss``)."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise UnencodableAddress(f"the domain {domain!r} has no IDNA form: {exc}") from None
