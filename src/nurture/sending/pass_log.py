"""A record of each sending pass, written when it ends: what /metrics reports about sending.

The web process, which answers /metrics, is not the process that sends (the scheduler and
``send-due`` are, possibly on other machines), so each pass leaves one row in ``pass_log``:
when it started and finished (by the real clock), how it ended (``ok``; ``broken``: finished, with
templates that could not be rendered; ``stopped``: the mail server or the database was lost;
``breaker``: the circuit breaker paused sending; ``error``: a bug), the one-line reason, and what it
sent, retried, failed and saw bounce, per stream.

The table stays small: past :data:`KEEP` records the oldest are folded into one ``carried`` row
that holds their totals (counts per stream, and durations per histogram bucket), so the counters
/metrics derives from the table never go down.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.log_format import in_pass
from nurture.models import PassRecord
from nurture.sending.pass_summary import COUNTED, CircuitOpen, PassStopped, PassSummary

log = logging.getLogger(__name__)

KEEP = 2000  # records kept whole: three weeks of passes every 15 minutes
CARRIED = "carried"
_PRUNE_LOCK = 0x6E757274  # "nurt": this table's advisory lock key on PostgreSQL
# Upper bounds (seconds) of the pass duration histogram's buckets (+Inf is implied).
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass
class PassRun:
    """A pass in progress: its id (in every log line of its thread), its start, and how it ended."""

    pass_id: str
    started_at: datetime
    summary: PassSummary | None = None
    outcome: str = "error"
    reason: str | None = None
    counts: dict = field(default_factory=dict)


@contextmanager
def recorded_pass(sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> Iterator[PassRun]:
    """Wrap one pass: ``with recorded_pass(...) as run: run.summary = passes.run(...)``. When the
    block ends, however it ends, one record is written; an exception goes on to the caller. A
    record that cannot be written (the database is down, which may be why the pass stopped) is
    logged, never raised: it must not hide the pass's own outcome."""
    run = PassRun(pass_id=secrets.token_hex(6), started_at=clock())
    try:
        with in_pass(run.pass_id):
            yield run
        run.outcome = "broken" if run.summary is not None and run.summary.broken else "ok"
    except CircuitOpen as exc:
        run.outcome, run.reason = "breaker", str(exc)
        raise
    except PassStopped as exc:
        run.outcome, run.reason = "stopped", str(exc)
        raise
    except BaseException as exc:
        run.outcome, run.reason = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if run.outcome == "broken" and run.summary is not None:
            run.reason = "; ".join(sorted(run.summary.broken))
        try:
            write(sessions, run, finished_at=clock())
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("the record of pass %s was not written: %s", run.pass_id, exc, extra={"pass_id": run.pass_id})


def write(sessions: sessionmaker[Session], run: PassRun, *, finished_at: datetime) -> None:
    """Insert ``run``'s record and fold the oldest into the carried row past :data:`KEEP`."""
    summary = run.summary or PassSummary()
    record = PassRecord(
        pass_id=run.pass_id, started_at=run.started_at, finished_at=finished_at,
        seconds=max(0.0, (finished_at - run.started_at).total_seconds()), outcome=run.outcome,
        reason=run.reason[:500] if run.reason else None, planned=summary.planned,
        counts={stream: dict(counts) for stream, counts in summary.streams.items()},
    )
    with transaction(sessions) as session:
        session.add(record)
        session.flush()
        prune(session, keep=KEEP)


def prune(session: Session, *, keep: int) -> int:
    """Fold all but the newest ``keep`` records into the carried row; how many were folded.

    On PostgreSQL a transaction-scoped advisory lock comes first (SQLite's write transaction holds
    the whole database already), so two processes pruning at once never fold a record twice nor
    make two carried rows."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PRUNE_LOCK})
    carried = session.scalars(select(PassRecord).where(PassRecord.outcome == CARRIED)).first()
    total = session.scalar(select(func.count()).select_from(PassRecord).where(PassRecord.outcome != CARRIED)) or 0
    if total <= keep:
        return 0
    oldest = session.scalars(select(PassRecord).where(PassRecord.outcome != CARRIED)
                             .order_by(PassRecord.id).limit(total - keep)).all()
    if carried is None:
        carried = PassRecord(pass_id=CARRIED, started_at=oldest[0].started_at, finished_at=oldest[0].finished_at,
                             seconds=0.0, outcome=CARRIED, planned=0, counts={})
        session.add(carried)
    totals = fold(carried.counts or {}, oldest)
    carried.counts = totals
    carried.planned += sum(r.planned for r in oldest)
    carried.seconds += sum(r.seconds for r in oldest)
    carried.finished_at = max(r.finished_at for r in oldest)
    session.execute(delete(PassRecord).where(PassRecord.id.in_([r.id for r in oldest])))
    return len(oldest)


def fold(carried: dict, records: list[PassRecord]) -> dict:
    """``carried``'s counts plus those of ``records``: per stream, and ``durations``, the number of
    passes per histogram bucket (not cumulative; the last for longer than every bound)."""
    totals = {stream: dict(counts) for stream, counts in carried.items()}
    durations = list(totals.pop("durations", {}).get("buckets", [0] * (len(DURATION_BUCKETS) + 1)))
    for record in records:
        for stream, counts in (record.counts or {}).items():
            into = totals.setdefault(stream, {})
            for name in COUNTED:
                into[name] = into.get(name, 0) + counts.get(name, 0)
        durations[bucket_of(record.seconds)] += 1
    totals["durations"] = {"buckets": durations}
    return totals


def bucket_of(seconds: float) -> int:
    """The index of the histogram bucket ``seconds`` falls in (len(DURATION_BUCKETS) for +Inf)."""
    return next((i for i, bound in enumerate(DURATION_BUCKETS) if seconds <= bound), len(DURATION_BUCKETS))
