"""The rate limits hold for all senders together: several real `nurture send-due` processes on
one database share one budget (token buckets in the database), measured at the SMTP server."""

from __future__ import annotations

from datetime import timedelta

from conftest import make_settings
from factories import bulk_confirmed
from nurture.db import make_engine, session_factory
from nurture.models import OutboxState
from nurture.runtime import Runtime

from .test_concurrent_senders import T0, copies_by_recipient, send_due, states

RATE = 20


def steady_rate(times: list[float]) -> float:
    """Messages a second between the 10th and the 90th percentile of arrivals: the start (imports,
    the first grant's burst) and the tail (the last process finishing alone) left out."""
    times = sorted(times)
    low, high = len(times) // 10, len(times) * 9 // 10
    return (high - low) / (times[high] - times[low])


def queue_due(tmp_path, database_url) -> None:
    """Plan the pass first, so every process finds the messages queued as it starts."""
    runtime = Runtime(make_settings(tmp_path, database_url))
    try:
        assert runtime.sender().prepare(T0) > 0
    finally:
        runtime.close()


def test_senders_in_several_processes_keep_one_rate_together(tmp_path, database_url, smtp_server):
    processes = 3 if database_url.startswith("postgresql") else 2
    count = 300  # 15 s at 20/s (5 s at 60/s, were each process to keep the rate on its own)
    bulk_confirmed(session_factory(make_engine(database_url)), count, T0 - timedelta(minutes=1))
    queue_due(tmp_path, database_url)
    # A short lease makes small batches (a quarter lease of sending), so every process has a share;
    # 6 s still leaves time for the first message's build (the CSS inlining) on a loaded machine.
    running = [send_due(tmp_path, database_url, smtp_server.url, T0, rate_per_second=RATE, lease_seconds=6)
               for _ in range(processes)]
    outputs = [p.communicate(timeout=300) for p in running]
    assert [p.returncode for p in running] == [0] * processes, outputs
    sent = [int(out.decode().split("sent ")[1].split(",")[0]) for out, _ in outputs]
    assert all(sent) and sum(sent) == count, sent  # each process sent part of it, all at once
    by = copies_by_recipient(smtp_server.handler)
    repeated = {r: ids for r, ids in by.items() if len(ids) > 1}
    assert len(by) == count and not repeated, (repeated, [err.decode()[-3000:] for _, err in outputs])
    assert states(database_url) == {OutboxState.sent: count}
    rate = steady_rate([m.at for m in smtp_server.handler.messages])
    print(f"{processes} processes at NURTURE_RATE_PER_SECOND={RATE}: {rate:.1f} messages a second together")
    assert RATE * 0.9 <= rate <= RATE * 1.1
