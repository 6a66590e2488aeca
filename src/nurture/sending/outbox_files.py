"""The local Maildir outbox read back for a person: the newest message, decoded (headers, plain
text, links), for `nurture outbox last`. The files themselves are plain RFC 5322 messages: a mail
client opens one renamed to ``.eml``."""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from pathlib import Path

from nurture.sending.tracked_links import links_in

__all__ = ["OutboxEmpty", "OutboxMessageFile", "newest_message"]


class OutboxEmpty(Exception):
    """No message in the outbox folder (or no such folder)."""


@dataclass(frozen=True)
class OutboxMessageFile:
    path: Path
    raw: bytes
    headers: dict[str, str]
    text: str
    links: list[str]  # http(s) links of the HTML part in order, once each, quoted-printable decoded


def newest_message(outbox_dir: Path) -> OutboxMessageFile:
    """The most recently written message in the Maildir ``outbox_dir`` (new/ and cur/)."""
    files = [p for sub in ("new", "cur") if (outbox_dir / sub).is_dir()
             for p in (outbox_dir / sub).iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise OutboxEmpty(f"no message in {outbox_dir}/ yet (mail is written there when it is sent)")
    path = max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
    raw = path.read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    text = text_part.get_content() if text_part is not None else ""
    seen: dict[str, None] = {}
    if html_part is not None:
        for url in links_in(html_part.get_content()):
            seen.setdefault(url)
    headers = {name: str(message.get(name, "")) for name in ("Date", "From", "To", "Subject", "Message-ID")}
    return OutboxMessageFile(path, raw, headers, text, list(seen))
