"""Whether a report's sender can be believed: a feedback loop the operator trusts, proven by DKIM.

Anyone can mail the bounce mailbox, and a report's From is as easy to forge as its content. A
report is evidence when it names a Message-ID we signed (checked in :mod:`nurture.bounces`
against the outbox row) or, as here, when it comes from a sender listed in
``NURTURE_TRUSTED_FEEDBACK_SENDERS`` *and* carries a DKIM signature that verifies with a d= of
that trusted domain, aligned with its From. An unsigned report from a trusted sender proves
nothing about who sent it, so it is believed only through a Message-ID of ours, like any other.

DNS is reached only for reports whose From is a trusted sender, and only for signatures by that
sender's domain: a forged report cannot make us look up a domain of its choosing. The lookup is
injectable (``dnsfunc``, dkimpy's own signature) so tests use a key pair they made.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses

log = logging.getLogger(__name__)

DnsFunc = Callable[..., bytes | None]  # dkimpy's: (name: bytes, timeout=5) -> TXT record or None

_MAX_SIGNATURES = 5  # a report with more is not worth more DNS lookups
_TAG_D = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.I)
_TAG_L = re.compile(rb"(?:^|;)\s*l\s*=", re.I)
_TAG_H = re.compile(rb"(?:^|;)\s*h\s*=([^;]*)", re.I)


@dataclass(frozen=True)
class SenderVerdict:
    """Is the report from a trusted, DKIM-verified feedback loop; if not, why not (for people)."""

    trusted: bool
    reason: str
    temporary: bool = False  # the key could not be looked up (DNS failed): judge again later


def judge_sender(raw: bytes, message: Message, trusted: Sequence[str], *,
                 dnsfunc: DnsFunc | None = None) -> SenderVerdict:
    """Whether ``message`` (whose bytes are ``raw``) comes from one of the ``trusted`` senders
    (lower-case domains or addresses), proven by a DKIM signature of that domain. Never raises:
    a garbled header or a failing lookup is a reason not to trust, not an error."""
    address = _single_from([str(v) for v in message.get_all("From", [])])
    if address is None:
        return SenderVerdict(False, "sender not a trusted feedback loop (no single From address)")
    domain = trusted_domain(address, trusted)
    if domain is None:
        return SenderVerdict(False, "sender not a trusted feedback loop")
    return _dkim_verdict(raw, address, domain, dnsfunc)


def trusted_domain(address: str, trusted: Sequence[str]) -> str | None:
    """The configured domain that vouches for ``address``: an entry that is that address (its
    domain), or a domain that is the address's domain or a parent of it. None if none does."""
    address = address.lower()
    from_domain = address.rpartition("@")[2]
    for entry in (e.strip().lower() for e in trusted):
        if "@" in entry:
            if entry == address:
                return entry.rpartition("@")[2]
        elif entry and _within(from_domain, entry):
            return entry
    return None


def _dkim_verdict(raw: bytes, address: str, domain: str, dnsfunc: DnsFunc | None) -> SenderVerdict:
    import dkim  # dkimpy, and through it dnspython: loaded only when a trusted sender writes

    # The headers as dkimpy reads them, so that the From judged here and the signatures counted
    # here are the ones it verifies (two parsers can disagree about a malformed header block).
    try:
        headers, _body = dkim.rfc822_parse(raw)
    except Exception:  # noqa: BLE001 - MessageFormatError, or IndexError on a leading continuation
        return SenderVerdict(False, f"claims trusted feedback loop {domain} but its headers cannot be read for DKIM")
    if _single_from([v.decode("utf-8", "replace") for n, v in headers if n.lower() == b"from"]) != address:
        return SenderVerdict(False, "sender not a trusted feedback loop (no single From address)")
    signatures = [v for n, v in headers if n.lower() == b"dkim-signature"]
    if not signatures:
        return SenderVerdict(False, f"from trusted feedback loop {domain} but not DKIM-signed")
    from_domain = address.rpartition("@")[2]
    # Only a signature by the trusted domain, aligned with From (relaxed, as in DMARC), can vouch.
    wanted = {i: d for i, sig in enumerate(signatures[:_MAX_SIGNATURES])
              if (d := _signing_domain(sig)) and _within(d, domain) and _within(from_domain, d)}
    if not wanted:
        others = sorted({d for sig in signatures if (d := _signing_domain(sig))})
        by = f"d={', d='.join(others)}" if others else "an unreadable signature"
        return SenderVerdict(False, f"claims trusted feedback loop {domain} but is DKIM-signed by {by}")
    wanted = {i: d for i, d in wanted.items() if _covers_report(signatures[i])}
    if not wanted:
        return SenderVerdict(False, f"DKIM signature of {domain} leaves From or part of the body unsigned")
    failure, temporary = "did not verify", False
    for index, signer in wanted.items():
        ok, failure, temporary = _verify(raw, index, signer, dnsfunc)
        if ok:
            return SenderVerdict(True, f"trusted feedback loop {domain}, DKIM verified")
    return SenderVerdict(False, f"claims trusted feedback loop {domain} but its DKIM signature {failure}", temporary)


def _verify(raw: bytes, index: int, signer: str, dnsfunc: DnsFunc | None) -> tuple[bool, str, bool]:
    """Verify signature ``index``, which must be by ``signer``: (verified, why not, whether the
    failure was DNS not answering, which is worth another try later)."""
    import dkim

    lookup_failed = False

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        nonlocal lookup_failed
        try:
            return (dnsfunc or dkim.dnsplug.get_txt)(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            lookup_failed = True  # dkimpy turns this into a plain "no": remember it was DNS
            raise

    try:
        checker = dkim.DKIM(raw, minkey=1024)
        ok = checker.verify(index, dnsfunc=lookup)
    except dkim.DKIMException as exc:
        return False, f"did not verify ({_short(exc)})", False
    except Exception as exc:  # noqa: BLE001 - dkimpy trips on some garbage with plain exceptions
        log.warning("DKIM verification failed on a report: %r", exc)
        return False, "could not be read", False
    if lookup_failed:
        return False, "could not be checked (DNS did not answer)", True
    # Belt and braces: the signature dkimpy checked is the one whose d= was judged above.
    verified_by = (checker.domain or b"").decode("ascii", "replace").lower().rstrip(".")
    if ok and verified_by != signer:
        return False, f"was checked for d={verified_by}, not d={signer}", False
    return bool(ok), "verified" if ok else "did not verify", False


def _single_from(values: list[str]) -> str | None:
    """The one From address, lower-cased; None when there is none, or more than one."""
    found = getaddresses(values)
    if len(found) != 1 or "@" not in found[0][1]:
        return None
    return found[0][1].strip().lower()


def _covers_report(signature: bytes) -> bool:
    """The signature covers the From we judge and the whole body: with l= only the first bytes
    of the body are signed, and anything appended (a second report) would ride along."""
    signed = _TAG_H.search(signature)
    names = {n.strip().lower() for n in signed.group(1).split(b":")} if signed else set()
    return b"from" in names and not _TAG_L.search(signature)


def _signing_domain(signature: bytes) -> str | None:
    match = _TAG_D.search(signature)
    if not match:
        return None
    try:
        return match.group(1).decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError:
        return None


def _within(domain: str, parent: str) -> bool:
    """``domain`` is ``parent`` or one of its subdomains."""
    return domain == parent or domain.endswith("." + parent)


def _short(exc: Exception) -> str:
    """dkimpy's message without the hashes it quotes ("body hash mismatch (got b'...', ...)")."""
    return " ".join(str(exc).split(" (got ")[0].split())[:120]
