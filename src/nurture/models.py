"""The tables, nothing else. Rules live in subscribers.py, outbox.py and friends."""

from __future__ import annotations

import enum
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from nurture.config import DEFAULT_SEQUENCE

# SQLite keeps BIGINT primary keys from auto-incrementing; use INTEGER there.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator):
    """Aware UTC datetimes in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC datetime")
        return value

    def process_result_value(self, value, dialect):
        from datetime import timezone

        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    pass


# Subscriber.next_due_at: "look at this person at the next pass", and "nothing more to plan".
UNPLANNED = datetime(1970, 1, 1, tzinfo=timezone.utc)
NEVER = datetime(9000, 1, 1, tzinfo=timezone.utc)  # far, yet clear of year 9999 in any time zone


class Status(str, enum.Enum):
    pending = "pending"
    confirmed = "confirmed"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    erased = "erased"


class OutboxState(str, enum.Enum):
    queued = "queued"
    sending = "sending"
    sent = "sent"
    retry = "retry"
    failed = "failed"
    unknown = "unknown"
    suppressed = "suppressed"
    cancelled = "cancelled"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK, so adding a state is a small migration on both databases.
    return Enum(cls, name=name, native_enum=False, create_constraint=True, length=16)


class Subscriber(Base):
    __tablename__ = "subscribers"
    # A pass plans only people whose next step may be due: one range of this index (journey.py).
    __table_args__ = (
        Index("ix_subscribers_next_due", "status", "wants_series", "next_due_at"),
        # /metrics counts confirmations on every scrape: one range of this index, not the table.
        Index("ix_subscribers_confirmed_at", "confirmed_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    # Normalised address; NULL once erased. Uniqueness is on email_hash, which survives erasure
    # as the tombstone that keeps an erased address suppressed.
    email: Mapped[str | None] = mapped_column(String(254))
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    status: Mapped[Status] = mapped_column(_enum(Status, "subscriber_status"), index=True)
    wants_series: Mapped[bool] = mapped_column(default=True)
    wants_newsletter: Mapped[bool] = mapped_column(default=True)
    sequence: Mapped[str] = mapped_column(String(64), default=DEFAULT_SEQUENCE)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Increases with each double opt-in round, so each confirmation email has its own outbox key.
    confirm_round: Mapped[int] = mapped_column(Integer, default=0)
    # No later than the next sequence step can go (UNPLANNED: work it out at the next pass).
    next_due_at: Mapped[datetime] = mapped_column(UtcDateTime, default=UNPLANNED)


class ConsentEvent(Base):
    """The consent ledger: append-only, one row per consent given or withdrawn."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # signup, confirm, withdraw, import
    scope: Mapped[str] = mapped_column(String(16), default="all")  # all, series, newsletter
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(64))  # signup-form, json-api, one-click, import:<source>
    wording: Mapped[str | None] = mapped_column(Text)
    wording_version: Mapped[str | None] = mapped_column(String(32))


class OutboxMessage(Base):
    """One message for one subscriber. The (subscriber, key) pair is unique: that is what makes
    re-running anything safe. Keys: ``seq:<sequence>:<step>``, ``bcast:<id>``, ``sys:confirm:<n>``."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("subscriber_id", "key", name="uq_outbox_subscriber_key"),
        Index("ix_outbox_state_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(128))
    template: Mapped[str] = mapped_column(String(255))
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState, "outbox_state"))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # How many attempts ended with no SMTP reply after DATA; such a message may or may not have
    # arrived, so it is resent at most once (with the same Message-ID).
    unknowns: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    smtp_reply: Mapped[str | None] = mapped_column(String(512))
    last_error: Mapped[str | None] = mapped_column(String(512))
    track_opens: Mapped[bool] = mapped_column(default=False)
    # The template version (TemplateVersion.digest) the last attempt was built from: for a sent
    # row, the version the person received. Null for rows sent before versions were kept.
    template_version: Mapped[str | None] = mapped_column(String(64))


class Event(Base):
    """What happened, for reports: sent, delivered, opened, clicked, unsubscribed, bounced, complained."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_time", "kind", "created_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    detail: Mapped[str | None] = mapped_column(String(512))


class PlannerState(Base):
    """What the stored ``next_due_at`` instants of a sequence were computed from (a hash of its
    steps and the send window): when it changes, everyone is planned again."""

    __tablename__ = "planner_state"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))


class Broadcast(Base):
    """A newsletter issue sent once to an audience fixed when it was created. Each recipient has
    one outbox row keyed ``bcast:<id>``, so a resumed or repeated send never sends twice."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    template: Mapped[str] = mapped_column(String(255))
    audience: Mapped[str] = mapped_column(String(80))  # all, finished, tag:<name>
    status: Mapped[str] = mapped_column(String(16))  # scheduled, sending, sent, cancelled
    send_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    track_opens: Mapped[bool] = mapped_column(default=False)
    recipients: Mapped[int] = mapped_column(Integer, default=0)


class PassRecord(Base):
    """One sending pass, written when it ended (``nurture.sending.pass_log``): what /metrics says
    about sending, read by the web process, which does not send. ``outcome`` is ok, broken,
    stopped, breaker or error; the row ``carried`` holds the totals of pruned records."""

    __tablename__ = "pass_log"
    __table_args__ = (Index("ix_pass_log_outcome_finished", "outcome", "finished_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    pass_id: Mapped[str] = mapped_column(String(32))  # also in the pass's log lines
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)
    seconds: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(512))
    planned: Mapped[int] = mapped_column(Integer, default=0)
    # Per stream, {"sequence": {"sent": 3, "retried": 1, ...}}; the carried row adds "durations".
    counts: Mapped[dict] = mapped_column(JSON, default=dict)


class TemplateVersion(Base):
    """A version of an email as it was sent: the text of every file it was built from (JSON,
    path -> text), keyed by template and a hash of those files. Written once per version, the
    first time a message built from it is recorded; never changed or deleted."""

    __tablename__ = "template_versions"

    template: Mapped[str] = mapped_column(String(255), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    sources: Mapped[str] = mapped_column(Text)
    first_sent_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Goal(Base):
    """A person reached the sequence's goal (booked a consultation): one row per booking, from the
    booking system's webhook, ``nurture goal booked`` or an import. Its first row for a person ends
    their sequence (people.goals). A booking for an address nobody subscribed with is kept
    unmatched: no subscriber, and instead of the address its keyed hash and a masked hint."""

    __tablename__ = "goals"
    __table_args__ = (
        # A booking system's event id is recorded once: a retried or replayed delivery adds nothing.
        UniqueConstraint("source", "external_id", name="uq_goals_source_external_id"),
        # The same person booked at the same instant is the same booking, whichever way it came in.
        UniqueConstraint("email_hash", "booked_at", name="uq_goals_email_booked_at"),
        Index("ix_goals_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    goal: Mapped[str] = mapped_column(String(32))  # "booked": the one goal there is for now
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    # Keyed like Subscriber.email_hash (the tombstone pepper), so it matches that person's row.
    email_hash: Mapped[str] = mapped_column(String(64), index=True)
    email_hint: Mapped[str | None] = mapped_column(String(80))  # unmatched only: "j•••@example.com"
    source: Mapped[str] = mapped_column(String(16))  # webhook, cli, import
    external_id: Mapped[str | None] = mapped_column(String(128))
    booked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


TOMBSTONE_PEPPER = "tombstone_pepper"


class AppSecret(Base):
    """Secrets this installation keeps in its own database, made once by a migration and never
    rotated with NURTURE_SECRET_KEY: ``tombstone_pepper`` (32 random bytes, hex), the key of
    ``Subscriber.email_hash``, which must stay the same for as long as a tombstone exists."""

    __tablename__ = "app_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class SendBudgetBucket(Base):
    """One token bucket of the sending budget every sender on this database draws from
    (``second`` for NURTURE_RATE_PER_SECOND, ``hour`` for NURTURE_RATE_PER_HOUR): the tokens
    left at ``refreshed_at``, in seconds since the epoch by the real clock. Rules: sending/send_budget.py."""

    __tablename__ = "send_budget"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    refreshed_at: Mapped[float] = mapped_column(Float)


class RateWindow(Base):
    """Hits counted per key (a client address) in a window opened by the first hit, shared by
    every web process: the signup limit and the /admin lockout (``scope``). Seconds since the
    epoch by the real clock; rows whose window has passed are swept. Rules: web/rate_windows.py."""

    __tablename__ = "rate_windows"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)


class WebhookEndpoint(Base):
    """A URL an operator registered to hear of events (webhooks out), with its own signing secret.
    ``paused_at`` is set when it has failed for a day with no success; its deliveries then wait."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[str] = mapped_column(String(200))  # comma-separated event kinds
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_failure_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_failure_reason: Mapped[str | None] = mapped_column(String(200))
    # The first failure since the last success: a day after it, with no success, the endpoint pauses.
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    paused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebhookEvent(Base):
    """Something that happened, as sent to endpoints: ``body`` is the exact JSON signed and posted
    (the email address and ids only). Written in the transaction of the change itself."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"), index=True)
    body: Mapped[str] = mapped_column(Text)


class WebhookDelivery(Base):
    """One event for one endpoint: the webhooks' outbox row. States: queued, sending (worker and
    lease), retry (at ``due_at``), delivered."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_delivery_event_endpoint"),
        Index("ix_webhook_deliveries_state_due", "state", "due_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(200))


class WebhookAttempt(Base):
    """The delivery log: one row per POST, with its HTTP status (None: no answer) and a reason."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (Index("ix_webhook_attempts_endpoint_at", "endpoint_id", "at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column()
    reason: Mapped[str] = mapped_column(String(200))
