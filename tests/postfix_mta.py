"""A private Debian Postfix for the MTA test tier, started and stopped by scripts/postfix-test-mta.

The instance listens on 127.0.0.1 with STARTTLS (a CA made at start; clients trust it through
``SSL_CERT_FILE``) and SMTPUTF8, refuses ``REJECTED`` at RCPT with 550 5.1.1, and delivers every
other recipient of any domain into one Maildir, which ``Inbox`` reads back with the standard
``email`` parser. Postfix's virtual delivery agent adds ``Delivered-To`` (the envelope recipient as
Postfix saw it) and a ``Received`` header that names the TLS version when STARTTLS happened.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path

from smtp_sink import free_port

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postfix-test-mta"
REJECTED = "nobody@example.com"


def unavailable() -> str | None:
    """Why this machine cannot run the tier, or None when it can."""
    if not (shutil.which("postfix") or Path("/usr/sbin/postfix").exists()):
        return f"Debian's postfix is not installed (run: {SCRIPT.relative_to(SCRIPT.parents[1])} install)"
    if not shutil.which("openssl"):
        return "openssl is not installed"
    if os.geteuid() != 0:
        return "a private Postfix instance must be started as root"
    return None


@dataclass(frozen=True)
class Delivered:
    """One file Postfix delivered, parsed with policy=email.policy.default."""

    path: Path
    message: EmailMessage

    @property
    def recipient(self) -> str:
        """The envelope recipient (Postfix's Delivered-To)."""
        return str(self.message["Delivered-To"])

    @property
    def received_by_us(self) -> str:
        """Our Postfix's Received header: the top one, since nothing relayed the message further."""
        return str(self.message.get_all("Received")[0])

    @property
    def over_tls(self) -> bool:
        return "(using TLSv1." in self.received_by_us


@dataclass
class Inbox:
    """The mail delivered since this inbox was opened (the Maildir is shared by the session)."""

    maildir: Path
    seen: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.seen = set(self._names())

    def _names(self) -> list[str]:
        new = self.maildir / "new"
        return sorted(os.listdir(new)) if new.is_dir() else []

    def messages(self) -> list[Delivered]:
        return [Delivered(path, email.message_from_bytes(path.read_bytes(), policy=policy.default))
                for name in self._names() if name not in self.seen for path in [self.maildir / "new" / name]]

    def to(self, recipient: str) -> list[Delivered]:
        return [d for d in self.messages() if d.recipient == recipient]


class PostfixMta:
    """One private Postfix instance in a folder of its own."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=1"

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    @property
    def maildir(self) -> Path:
        return self.directory / "mail" / "Maildir"

    def _script(self, *args: str) -> None:
        done = subprocess.run([str(SCRIPT), *args, "--dir", str(self.directory)], capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"postfix-test-mta {args[0]} failed:\n{done.stdout}{done.stderr}\n{self.log()}")

    def start(self) -> PostfixMta:
        self._script("start", "--port", str(self.port), "--reject", REJECTED)
        return self

    def stop(self) -> None:
        self._script("stop")

    def inbox(self) -> Inbox:
        return Inbox(self.maildir)

    def log(self) -> str:
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def queued(self) -> dict[str, int]:
        """Messages in Postfix's queue, by queue (root reads the postfix-owned folders)."""
        queue = self.directory / "queue"
        return {part: count for part in ("maildrop", "incoming", "active", "deferred")
                if (count := sum(len(names) for _root, _dirs, names in os.walk(queue / part)))}

    def settle(self, timeout: float = 15.0) -> None:
        """Wait until Postfix has delivered everything it accepted (an accepted message is in the
        queue before the 250 reply). Deferred mail fails here: every recipient is local."""
        deadline = time.monotonic() + timeout
        while queued := self.queued():
            if set(queued) == {"deferred"}:
                raise AssertionError(f"Postfix deferred {queued['deferred']} message(s):\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix still holds {queued} after {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)


def start_for_session() -> PostfixMta:
    """A started instance in a new folder under the system temp dir (not pytest's tmp, which is
    mode 0700: Postfix's own users must get through the folders above their queue and Maildir)."""
    return PostfixMta(Path(tempfile.mkdtemp(prefix="nurture-postfix-"))).start()
