"""The endpoints webhooks go to: registering, pausing and resuming them, and what they did.

Each endpoint has its own signing secret, shown once when it is added (and when rotated). An
endpoint that has failed for a day with no success pauses (:mod:`nurture.people.webhook_delivery`
decides when); its deliveries wait, and resuming it sends them at once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from nurture.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from nurture.people.webhook_events import parse_kinds

PENDING = ("queued", "retry", "sending")


class EndpointError(ValueError):
    """A URL, an id or an event list the operator should correct (one line)."""


def check_url(url: str, *, production: bool) -> str:
    """The URL as given, if webhooks may go there: https (plain http only in development), a host,
    no credentials in it (they would show in every log and listing)."""
    parts = urlsplit(url.strip())
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        need = "https://" if production else "http:// or https://"
        raise EndpointError(f"webhook URL must start with {need}: {url}")
    if not parts.hostname:
        raise EndpointError(f"webhook URL has no host: {url}")
    if parts.username or parts.password:
        raise EndpointError("webhook URL must not carry a user or password; the signature authenticates us")
    if len(url) > 2048:
        raise EndpointError("webhook URL is longer than 2,048 characters")
    return url.strip()


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def add(session: Session, url: str, events: str, *, now: datetime, production: bool) -> WebhookEndpoint:
    """Register an endpoint for the comma-separated ``events``; it hears of what happens from now on."""
    endpoint = WebhookEndpoint(url=check_url(url, production=production), events=",".join(parse_kinds(events)),
                               secret=new_secret(), created_at=now)
    session.add(endpoint)
    session.flush()
    return endpoint


def _existing(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id, with_for_update=True)
    if endpoint is None:
        raise EndpointError(f"no webhook endpoint {endpoint_id} (`nurture webhooks list` shows them)")
    return endpoint


def remove(session: Session, endpoint_id: int) -> str:
    """Remove an endpoint, its undelivered deliveries and its log; returns its URL."""
    url = _existing(session, endpoint_id).url
    session.execute(delete(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id))
    return url


def resume(session: Session, endpoint_id: int, *, now: datetime) -> int:
    """Unpause an endpoint and make its waiting deliveries due now; returns how many wait."""
    endpoint = _existing(session, endpoint_id)
    endpoint.paused_at = None
    endpoint.failing_since = None
    return session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.state.in_(("queued", "retry")))
        .values(due_at=now)
    ).rowcount


def rotate_secret(session: Session, endpoint_id: int) -> str:
    """A new signing secret for an endpoint (the old one stops at once); returns it."""
    endpoint = _existing(session, endpoint_id)
    endpoint.secret = new_secret()
    return endpoint.secret


@dataclass(frozen=True)
class EndpointStatus:
    """One endpoint as `webhooks list` and /admin show it."""

    id: int
    url: str
    events: tuple[str, ...]
    state: str  # active, failing, paused
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure_reason: str | None
    paused_at: datetime | None
    delivered: int
    pending: int


def statuses(session: Session) -> list[EndpointStatus]:
    """Every endpoint with its state and counts, oldest first (one grouped query for the counts)."""
    counts: dict[tuple[int, str], int] = {
        (endpoint_id, state): n for endpoint_id, state, n in session.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.state, func.count())
            .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.state))}
    found = []
    for e in session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)):
        state = "paused" if e.paused_at else "failing" if e.failing_since else "active"
        found.append(EndpointStatus(
            e.id, e.url, tuple(e.events.split(",")), state, e.last_success_at, e.last_failure_at,
            e.last_failure_reason, e.paused_at, counts.get((e.id, "delivered"), 0),
            sum(counts.get((e.id, s), 0) for s in PENDING)))
    return found


@dataclass(frozen=True)
class LoggedAttempt:
    at: datetime
    endpoint_id: int
    event_id: str
    kind: str
    status: int | None
    ok: bool
    reason: str


def recent_attempts(session: Session, *, endpoint_id: int | None = None, limit: int = 20) -> list[LoggedAttempt]:
    """The delivery log, newest first: every POST with its HTTP status and reason."""
    query = (select(WebhookAttempt.at, WebhookAttempt.endpoint_id, WebhookEvent.public_id, WebhookEvent.kind,
                    WebhookAttempt.status, WebhookAttempt.ok, WebhookAttempt.reason)
             .join(WebhookDelivery, WebhookDelivery.id == WebhookAttempt.delivery_id)
             .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
             .order_by(WebhookAttempt.at.desc(), WebhookAttempt.id.desc()).limit(limit))
    if endpoint_id is not None:
        query = query.where(WebhookAttempt.endpoint_id == endpoint_id)
    return [LoggedAttempt(*row) for row in session.execute(query)]
