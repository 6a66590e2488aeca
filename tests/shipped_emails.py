"""Every shipped email as the sender builds it: real templates, real renderer, real headers.

Used where the whole message is judged (SpamAssassin, tests/integration/test_spamassassin.py) or
its HTML is shown in a browser (tests/browser/test_email_clients.py)."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy
from pathlib import Path

from nurture.content.sequences import describe_email
from nurture.sending.outbox import Claim

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "templates" / "emails"
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)


def shipped_templates() -> list[str]:
    """Every email file a person can receive, relative to templates/emails."""
    return sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.glob("*/*.html.j2"))


def outbox_key(template: str) -> str:
    """The outbox key the sender would give this email (its stream follows from it)."""
    step, _total = describe_email(TEMPLATES, template)
    if template.startswith("system/"):
        return "sys:confirm:1"
    if template.startswith("newsletter/"):
        return "bcast:1"
    return f"seq:{step.sequence}:{step.key}"


def build_shipped(runtime, template: str, *, subscriber_id: int = 1, outbox_id: int = 1) -> bytes:
    """The exact bytes the sender would hand the mail server for this email."""
    claim = Claim(id=outbox_id, key=outbox_key(template), template=template, attempts=1, unknowns=0,
                  track_opens=False, subscriber_id=subscriber_id, email="reader@example.com", first_name="Alex",
                  timezone="America/Chicago")
    return runtime.sender().build(claim, NOW)


def html_part(data: bytes) -> str:
    return email.message_from_bytes(data, policy=policy.default).get_body(("html",)).get_content()
