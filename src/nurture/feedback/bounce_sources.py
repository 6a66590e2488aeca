"""Where returned mail is read from: a Maildir or mbox on disk, or an IMAP mailbox.

Each reader yields raw messages and changes nothing at the source; :func:`nurture.bounces.ingest`
leaves its own markers, so reading the same mail again is harmless.
"""

from __future__ import annotations

import imaplib
import mailbox
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


def read_maildir_or_mbox(path: Path) -> Iterator[bytes]:
    """The messages of a Maildir (a directory with cur/, new/, tmp/) or an mbox file."""
    path = Path(path)
    if path.is_dir():
        if not all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            raise ValueError(f"{path} is a directory but not a Maildir (no cur/, new/ and tmp/)")
        box: mailbox.Mailbox = mailbox.Maildir(path, factory=None, create=False)
    elif path.is_file():
        with path.open("rb") as handle:
            head = handle.read(5)
        if head and head != b"From ":
            raise ValueError(f"{path} is not an mbox file (it does not start with a 'From ' line)")
        box = mailbox.mbox(path, create=False)
    else:
        raise ValueError(f"{path} does not exist")
    # Maildir names start with the delivery time, so sorted keys read roughly oldest first.
    for key in sorted(box.keys()):
        yield box.get_bytes(key)


@dataclass(frozen=True)
class ImapSource:
    host: str
    port: int
    user: str
    password: str
    mailbox: str
    starttls: bool  # imap:// upgrades with STARTTLS; a password never crosses the wire in clear


def parse_imap_url(url: str) -> ImapSource:
    """``imaps://user:pass@host[:port]/MAILBOX`` (or ``imap://`` with STARTTLS); percent-escapes
    in the user and password are decoded; the mailbox defaults to INBOX."""
    parts = urlsplit(url)
    if parts.scheme not in ("imaps", "imap"):
        raise ValueError("IMAP URL must start with imaps:// (or imap:// for STARTTLS)")
    if not parts.hostname or not parts.username or parts.password is None:
        raise ValueError("IMAP URL needs user, password and host: imaps://user:pass@host/INBOX")
    port = parts.port or (993 if parts.scheme == "imaps" else 143)
    return ImapSource(parts.hostname, port, unquote(parts.username), unquote(parts.password),
                      unquote(parts.path.lstrip("/")) or "INBOX", parts.scheme == "imap")


def read_imap(url: str, *, timeout: float = 60.0) -> Iterator[bytes]:
    """Unseen messages of an IMAP mailbox, read-only (nothing is flagged or moved); ingest's
    markers make reading them again on the next run harmless."""
    source = parse_imap_url(url)
    context = ssl.create_default_context()
    if source.starttls:
        client = imaplib.IMAP4(source.host, source.port, timeout=timeout)
        client.starttls(context)
    else:
        client = imaplib.IMAP4_SSL(source.host, source.port, ssl_context=context, timeout=timeout)
    try:
        client.login(source.user, source.password)
        status, _ = client.select('"' + source.mailbox.replace('"', r'\"') + '"', readonly=True)
        if status != "OK":
            raise ValueError(f"cannot open IMAP mailbox {source.mailbox!r}")
        _, data = client.search(None, "UNSEEN")
        for number in data[0].split():
            _, parts = client.fetch(number, "(BODY.PEEK[])")
            for part in parts:
                if isinstance(part, tuple):
                    yield part[1]
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass
