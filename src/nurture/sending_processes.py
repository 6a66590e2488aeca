"""A large sending pass spread over several processes.

One interpreter sends at most about a thousand messages a second, whatever the wire allows:
building, recording and every SMTP reply need its one lock (the GIL), and each connection's
next command waits for it while another thread builds. So a pass with much to send starts
``NURTURE_SEND_PROCESSES`` children, each with its own interpreter, database connection, share
of the SMTP connections, pacing at its share of the rate limit, all claiming from the same outbox
and drawing from the same sending budget (:mod:`nurture.sending.send_budget`). The
claims and owned leases (:mod:`nurture.outbox`, :mod:`nurture.leases`) already make several
senders safe, on SQLite and on PostgreSQL.

The parent plans and judges the complaint rate once, then starts the children (spawned, not
forked: the scheduler and the web process run threads, and a fork copies their locks), relays
their progress, stops them all when one stops for a reason that concerns every message, and adds
up their summaries. A small pass is sent in the parent: starting a child costs about half a
second of imports.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from nurture.config import Settings
from nurture.sending.pass_summary import PassStopped, PassSummary
from nurture.sending.sender import Sender

log = logging.getLogger(__name__)

# Below this many due messages one process sends them sooner than several can start.
SPREAD_FROM = 1000


@dataclass
class SendingPass:
    """Runs passes for one process's sender, spreading a large one over ``processes`` children."""

    sender: Sender
    settings: Settings
    spread_from: int = SPREAD_FROM

    def run(
        self,
        now: datetime,
        *,
        limit: int | None = None,
        progress: Callable[[int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> PassSummary:
        """Like :meth:`Sender.run_pass` (same summary, same exceptions), on as many processes as pay."""
        if self.settings.send_processes < 2 or (limit is not None and limit < self.spread_from):
            return self.sender.run_pass(now, limit=limit, progress=progress, stop=stop)
        children = None
        # Children take about half a second to start: when the pass looks large before planning
        # (what is queued, and the people whose next step has come), they start while it plans.
        if self.sender.due(now, at_most=self.spread_from, people=True) >= self.spread_from:
            children = _Children(self.settings, now, limit)
        try:
            planned = self.sender.prepare(now)
        except BaseException:
            if children is not None:
                children.cancel()
            raise
        if children is None and self.sender.due(now, at_most=self.spread_from) >= self.spread_from:
            children = _Children(self.settings, now, limit)
        if children is None:
            summary = self.sender.run_pass(now, limit=limit, progress=progress, stop=stop, prepared=True)
        else:
            summary = children.send(progress, stop)
        summary.planned = planned
        return summary


def shares(settings: Settings, processes: int, limit: int | None) -> list[tuple[Settings, int | None]]:
    """Each child's settings and limit: the connections, the rate limits and ``limit`` divided in
    proportion, so the children together keep to what the relay allows one sender. (Each paces
    at its share of the rates; the budget they all draw from in the database holds the total.)"""
    pool = settings.smtp_pool_size
    processes = max(1, min(processes, pool))
    connections = [pool // processes + (i < pool % processes) for i in range(processes)]
    limits: list[int | None] = [None] * processes
    if limit is not None:
        limits = [limit * c // pool for c in connections]
        limits[0] += limit - sum(limits)
    return [(settings.model_copy(update={
        "smtp_pool_size": c,
        "rate_per_second": settings.rate_per_second * c / pool,
        "rate_per_hour": settings.rate_per_hour * c // pool,
        "send_processes": 1,
    }), share_limit) for c, share_limit in zip(connections, limits)]


class _Children:
    """The sending children of one pass: started at once, sending once told to go."""

    def __init__(self, settings: Settings, now: datetime, limit: int | None) -> None:
        self.lease = settings.lease_seconds
        budget = (settings.rate_per_second, settings.rate_per_hour)  # the whole budget, shared in the database
        context = multiprocessing.get_context("spawn")
        self.events = context.Queue()
        self.go = context.Event()
        self.halt = context.Event()
        self.processes = [
            context.Process(target=_child, name=f"nurture-send-{i}", daemon=True,
                            args=(share, now, share_limit, self.events, self.go, self.halt, os.getpid(), budget))
            for i, (share, share_limit) in enumerate(shares(settings, settings.send_processes, limit))
        ]
        for process in self.processes:
            process.start()

    def cancel(self) -> None:
        self.halt.set()
        self.go.set()
        self._join()

    def send(self, progress: Callable[[int], None] | None, stop: threading.Event | None) -> PassSummary:
        """Let them send; relay their progress; the sum of their summaries, or the first reason one stopped."""
        log.info("spreading the pass over %d processes", len(self.processes))
        self.go.set()
        total = PassSummary()
        stopped: list[PassStopped] = []
        unheard = {p.name for p in self.processes}

        def heard(name: str, kind: str, value) -> None:
            if kind == "progress":
                if progress:
                    progress(value)
                return
            unheard.discard(name)
            if kind == "stopped":
                self.halt.set()  # one process's reason (the server is down, too many bounces) is everyone's
                stopped.append(value)
            else:
                total.include(value)

        try:
            while unheard:
                if stop is not None and stop.is_set():
                    self.halt.set()
                try:
                    heard(*self.events.get(timeout=0.2))
                    continue
                except queue.Empty:
                    pass
                silent = [p for p in self.processes if p.name in unheard and not p.is_alive()]
                if not silent:
                    continue
                try:  # an ended child's last words are in the pipe by now
                    heard(*self.events.get(timeout=0.5))
                except queue.Empty:
                    for process in silent:  # ended without a word: killed, or out of memory
                        unheard.discard(process.name)
                        self.halt.set()
                        stopped.append(PassStopped(
                            f"a sending process ended unexpectedly (exit code {process.exitcode}); the messages it "
                            f"had claimed go again once their lease runs out (NURTURE_LEASE_SECONDS={self.lease:g})"))
        finally:
            self.halt.set()
            self._join()
        if stopped:
            raise stopped[0]
        return total

    def _join(self) -> None:
        for process in self.processes:
            process.join(timeout=self.lease)


def _child(settings: Settings, now: datetime, limit: int | None, events, go, halt, parent: int,
           budget: tuple[float, int]) -> None:
    """One child: its own runtime, sending what it can claim until nothing is due or it is halted."""
    from nurture.runtime import Runtime

    become_child(parent, settings.log_level, settings.log_format)
    name = multiprocessing.current_process().name
    runtime = Runtime(settings, budget_rates=budget)
    try:
        go.wait()  # the parent plans meanwhile
        if halt.is_set():
            events.put((name, "done", PassSummary()))
            return
        summary = runtime.sender().run_pass(
            now, limit=limit, prepared=True, stop=halt, progress=lambda n: events.put((name, "progress", n)))
    except PassStopped as exc:
        events.put((name, "stopped", exc))
    else:
        events.put((name, "done", summary))
    finally:
        runtime.close()


def become_child(parent: int, log_level: str, log_format: str = "text") -> None:
    """What a sending child does first: die with its parent, leave signals to it, log like it
    (``log_format``: NURTURE_LOG_FORMAT)."""
    from nurture.log_format import configure

    _die_with(parent)
    # Ctrl-C and SIGTERM reach the whole process group: the parent decides, and stops its children
    # through their queue or event, so each finishes the message in flight and releases the rest.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure(log_level, log_format, with_process=True)


def _die_with(parent: int) -> None:
    """A child must not outlive a parent killed outright (SIGKILL): it would go on sending unseen.
    Its claims then wait out their lease, as a killed single process's do."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, Linux
    except (OSError, AttributeError):
        pass  # elsewhere a killed parent's children finish their pass, which is safe, only unseen
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the line above took effect
