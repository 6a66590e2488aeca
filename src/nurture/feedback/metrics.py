"""The figures /metrics serves to Prometheus, read from the database at each scrape.

The process that answers /metrics (the web endpoint) is not the one that sends, so nothing is
counted in memory: every figure is a query, each one cheap on a large list. The queue is counted
per live state on the outbox's (state, due_at) index, the oldest due message is the first entry of
that index, people are counted on the status and confirmed_at indexes, and everything about
sending comes from the small ``pass_log`` table the passes write (:mod:`nurture.sending.pass_log`).

Names (all prefixed ``nurture_``):

- ``queue_messages{state}``: outbox rows queued, sending, retry, unknown (gauge)
- ``oldest_queued_age_seconds``: how long the oldest message due and not sent has waited (gauge)
- ``messages_total{stream,outcome}``: by sending passes, per stream (sequence, newsletter,
  transactional) and outcome (sent, retried, failed, bounced, unknown) (counter)
- ``pass_duration_seconds``: sending passes by duration (histogram)
- ``last_pass_timestamp_seconds``, ``last_successful_pass_timestamp_seconds`` (gauges)
- ``circuit_breaker_open{reason}``: 1 when the last pass was paused by the breaker (gauge)
- ``subscribers{status}`` (gauge), ``signups_total``, ``confirmations_total`` (counters)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nurture.models import UNPLANNED, OutboxMessage, OutboxState, PassRecord, Status, Subscriber
from nurture.sending.pass_log import CARRIED, DURATION_BUCKETS, fold
from nurture.sending.pass_summary import COUNTED, STREAM_OF_KIND

QUEUE_STATES = (OutboxState.queued, OutboxState.sending, OutboxState.retry, OutboxState.unknown)
STREAMS = tuple(STREAM_OF_KIND.values())
SUCCESS = "ok"


@dataclass
class Figures:
    """What one scrape read."""

    queue: dict[str, int] = field(default_factory=dict)
    oldest_queued_age: float = 0.0
    messages: dict[str, dict[str, int]] = field(default_factory=dict)  # stream -> outcome -> count
    durations: list[int] = field(default_factory=list)  # passes per bucket, not cumulative
    durations_sum: float = 0.0
    last_pass: datetime | None = None
    last_success: datetime | None = None
    breaker_reason: str | None = None  # the last pass was paused by the breaker, for this reason
    subscribers: dict[str, int] = field(default_factory=dict)
    confirmations: int = 0


def read_figures(session: Session, now: datetime) -> Figures:
    """Every figure, in a handful of indexed queries."""
    figures = Figures()
    _read_queue(session, now, figures)
    _read_passes(session, figures)
    rows = session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)).all()
    figures.subscribers = {status.value: 0 for status in Status} | {Status(s).value: n for s, n in rows}
    # A range of the confirmed_at index (a bare IS NOT NULL is not one on every database).
    figures.confirmations = session.scalar(
        select(func.count()).select_from(Subscriber).where(Subscriber.confirmed_at >= UNPLANNED)) or 0
    return figures


def _read_queue(session: Session, now: datetime, figures: Figures) -> None:
    for state in QUEUE_STATES:
        figures.queue[state.value] = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == state)) or 0
    # Due and not sent: the first entry of the index for each state that waits for a pass.
    oldest = [session.scalar(select(func.min(OutboxMessage.due_at))
                             .where(OutboxMessage.state == state, OutboxMessage.due_at <= now))
              for state in (OutboxState.queued, OutboxState.retry)]
    due = [when for when in oldest if when is not None]
    figures.oldest_queued_age = max(0.0, (now - min(due)).total_seconds()) if due else 0.0


def _read_passes(session: Session, figures: Figures) -> None:
    records = session.scalars(select(PassRecord).where(PassRecord.outcome != CARRIED)).all()
    carried = session.scalars(select(PassRecord).where(PassRecord.outcome == CARRIED)).first()
    totals = fold(carried.counts if carried is not None else {}, list(records))
    durations = totals.pop("durations")["buckets"]
    figures.messages = {stream: {name: totals.get(stream, {}).get(name, 0) for name in COUNTED} for stream in STREAMS}
    figures.durations = durations
    figures.durations_sum = sum(r.seconds for r in records) + (carried.seconds if carried is not None else 0.0)
    if records:
        last = max(records, key=lambda r: (r.finished_at, r.id))
        figures.last_pass = last.finished_at
        figures.breaker_reason = (last.reason or "") if last.outcome == "breaker" else None
    figures.last_success = session.scalar(select(func.max(PassRecord.finished_at))
                                          .where(PassRecord.outcome == SUCCESS))


def families(figures: Figures) -> Iterator[Metric]:
    """The Prometheus metric families for ``figures``."""
    queue = GaugeMetricFamily("nurture_queue_messages", "Outbox messages waiting or in flight, by state.",
                              labels=["state"])
    for state, count in figures.queue.items():
        queue.add_metric([state], count)
    yield queue
    yield GaugeMetricFamily("nurture_oldest_queued_age_seconds",
                            "Age of the oldest message that is due and not sent (0 when none).",
                            value=figures.oldest_queued_age)
    messages = CounterMetricFamily("nurture_messages", "Messages handled by sending passes, by stream and outcome.",
                                   labels=["stream", "outcome"])
    for stream, counts in figures.messages.items():
        for outcome, count in counts.items():
            messages.add_metric([stream, outcome], count)
    yield messages
    cumulative, running = [], 0
    for bound, count in zip([*map(str, DURATION_BUCKETS), "+Inf"], figures.durations):
        running += count
        cumulative.append((bound, running))
    yield HistogramMetricFamily("nurture_pass_duration_seconds", "Duration of sending passes.",
                                buckets=cumulative, sum_value=figures.durations_sum)
    for name, when, text in (("last_pass", figures.last_pass, "End of the last sending pass, however it ended."),
                             ("last_successful_pass", figures.last_success,
                              "End of the last sending pass that finished without an error.")):
        if when is not None:
            yield GaugeMetricFamily(f"nurture_{name}_timestamp_seconds", text + " Unix time.", value=when.timestamp())
    breaker = GaugeMetricFamily("nurture_circuit_breaker_open",
                                "1 when the last sending pass was paused by the circuit breaker, with why.",
                                labels=["reason"])
    breaker.add_metric([figures.breaker_reason or ""], 0 if figures.breaker_reason is None else 1)
    yield breaker
    people = GaugeMetricFamily("nurture_subscribers", "Subscribers by status.", labels=["status"])
    for status, count in figures.subscribers.items():
        people.add_metric([status], count)
    yield people
    yield CounterMetricFamily("nurture_signups", "People who ever signed up (erased ones included).",
                              value=sum(figures.subscribers.values()))
    yield CounterMetricFamily("nurture_confirmations", "People who ever confirmed their subscription.",
                              value=figures.confirmations)


class NurtureCollector(Collector):
    """Reads :class:`Figures` from the database at each scrape (``clock`` gives the scrape's now)."""

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self.sessions, self.clock = sessions, clock

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            figures = read_figures(session, self.clock())
        yield from families(figures)


def registry(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> CollectorRegistry:
    """A registry of this app's own (never the global one, which other apps in the process share)."""
    own = CollectorRegistry(auto_describe=False)
    own.register(NurtureCollector(sessions, clock))
    return own


__all__ = ["Figures", "NurtureCollector", "families", "read_figures", "registry"]
