"""The consent ledger: append-only, one row per consent given or withdrawn, with its exact wording.

A row says who (the subscriber), when, from where (IP, user agent, source) and, for a consent
given, the words they agreed to, by version, so the clinic can always show what a person saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from nurture.models import ConsentEvent

__all__ = ["CONSENT_VERSION", "CONSENT_WORDINGS", "RequestInfo", "consent_values", "record_consent"]

# The exact words shown beside the consent checkbox, by version. Never edit a published version:
# add a new one, so the ledger can always show what a person agreed to.
CONSENT_WORDINGS = {
    "2026-11-28": (
        "Yes, email me Clearwater Psychiatry's short series about ketamine treatment for depression "
        "(four emails over about a week) and then the occasional newsletter. I can unsubscribe at any "
        "time with one click. These emails are educational and are not medical advice."
    ),
    # Issue 14: one short reminder after the invitation, only to people who clicked nothing in it.
    # It goes only to people whose wording mentions it (sending/step_conditions.py), so the people
    # who agreed to "four emails" above never get a fifth.
    "2026-12-02": (
        "Yes, email me Clearwater Psychiatry's short series about ketamine treatment for depression "
        "(four emails over about a week, and at most one short reminder after the last) and then the "
        "occasional newsletter. I can unsubscribe at any time with one click. These emails are "
        "educational and are not medical advice."
    ),
}
CONSENT_VERSION = "2026-12-02"


@dataclass(frozen=True)
class RequestInfo:
    """Who asked, for the consent ledger."""

    ip: str | None
    user_agent: str | None
    source: str


def record_consent(
    session: Session,
    subscriber_id: int,
    kind: str,
    now: datetime,
    request: RequestInfo,
    version: str | None,
    *,
    scope: str = "all",
) -> None:
    """Append a row to the consent ledger (``kind``: signup, confirm, withdraw, resume, import...)."""
    session.execute(insert(ConsentEvent).values(**consent_values(subscriber_id, kind, now, request, version,
                                                                   scope=scope)))


def consent_values(
    subscriber_id: int, kind: str, now: datetime, request: RequestInfo, version: str | None, *, scope: str = "all"
) -> dict:
    """A consent-ledger row: who, when, from where, and the exact wording of the version agreed to."""
    if kind in ("signup", "confirm", "resume") and version not in CONSENT_WORDINGS:
        version = CONSENT_VERSION
    return dict(
        subscriber_id=subscriber_id,
        kind=kind,
        scope=scope,
        created_at=now,
        ip=request.ip,
        user_agent=(request.user_agent or "")[:512] or None,
        source=request.source,
        wording=CONSENT_WORDINGS.get(version) if version else None,
        wording_version=version,
    )
