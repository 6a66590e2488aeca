"""Group commit: one writer thread commits the writes of concurrent requests (signups) together.

Each request learns its result only once the transaction holding its writes has committed. Items
that arrive while a group is being written form the next group, so under load one commit and one
acquisition of SQLite's write lock serve many requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from nurture.db import is_transient, transaction

log = logging.getLogger(__name__)

I = TypeVar("I")
R = TypeVar("R")
_STOP = object()


class GroupCommit(Generic[I, R]):
    """One writer thread that commits concurrent requests' writes together.

    ``work(session, items)`` does the writes of several requests in one transaction and returns
    one result per item, in order. A request awaits ``submit(item)``, which answers only after
    the transaction holding its writes has committed, so nobody is told "done" for a row that is
    not there; if the process dies first, the request gets no answer at all. Items that arrive
    while a group is being written form the next group: under load a commit and the lock
    hand-over are shared by many requests, and when idle a request waits for nobody.

    One item's failure is its own: when a group fails for a reason that is not transient (a
    constraint raced by another process, a bug tripped by one odd input), each of its items is
    written again in a transaction of its own, and only the one that fails again gets the error.
    A transient failure (the database unreachable or locked past its busy timeout) would fail
    every item the same way, so they all get it at once.

    ``after_commit(results)`` runs on the writer thread after each commit and before any
    request hears back (the web wakes the mail dispatcher there). The thread starts with the
    first ``submit`` or with ``start()``; ``stop()`` writes what is queued, then ends it.
    """

    def __init__(self, sessions: sessionmaker[Session], work: Callable[[Session, Sequence[I]], Sequence[R]], *,
                 after_commit: Callable[[Sequence[R]], None] | None = None, max_group: int = 256,
                 name: str = "nurture-group-commit") -> None:
        self.sessions = sessions
        self.work = work
        self.after_commit = after_commit
        self.max_group = max_group
        self.name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> None:
        with self._lock:
            self._stopping = False
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Write everything already submitted, then end the writer thread."""
        with self._lock:
            self._stopping = True
            thread = self._thread
            if thread is not None and thread.is_alive():
                self._queue.put(_STOP)
        if thread is not None:
            thread.join(timeout)

    async def submit(self, item: I) -> R:
        """Queue ``item`` for the next group; its result once committed (or its exception)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self._stopping:
                raise RuntimeError("shutting down: no more writes are taken")
            self._start_locked()
            self._queue.put((item, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group, stop = [first], False
            while len(group) < self.max_group:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    stop = True
                    break
                group.append(entry)
            try:
                outcomes = self._write([item for item, _loop, _future in group])
            except BaseException as exc:  # noqa: BLE001 - the requests must hear, whatever happened
                log.exception("group commit: writing a group of %d failed", len(group))
                outcomes = [(False, RuntimeError(f"the group writer failed: {exc!r}"))] * len(group)
                if not isinstance(exc, Exception):
                    self._answer(group, outcomes)
                    raise
            self._answer(group, outcomes)
            if stop:
                return

    def _write(self, items: list[I]) -> list[tuple[bool, object]]:
        try:
            with transaction(self.sessions) as session:
                results = list(self.work(session, items))
                if len(results) != len(items):  # checked before the commit: a bug writes nothing
                    raise RuntimeError(f"group commit: {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - sorted below
            if len(items) == 1 or is_transient(exc):
                return [(False, exc)] * len(items)
            log.warning("group commit: a group of %d failed (%s); writing each alone", len(items),
                        str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__)
            return [self._write_alone(item) for item in items]
        self._after_commit(results)
        return [(True, result) for result in results]

    def _write_alone(self, item: I) -> tuple[bool, object]:
        try:
            with transaction(self.sessions) as session:
                [result] = self.work(session, [item])
        except Exception as exc:  # noqa: BLE001 - this item's own failure, answered to it alone
            return False, exc
        self._after_commit([result])
        return True, result

    def _after_commit(self, results: Sequence[R]) -> None:
        if self.after_commit is None:
            return
        try:
            self.after_commit(results)
        except Exception:  # noqa: BLE001 - the writes are committed; the requests must hear so
            log.exception("group commit: after_commit failed")

    @staticmethod
    def _answer(group: list, outcomes: list[tuple[bool, object]]) -> None:
        """Hand each request its result on its own event loop: one wake-up per loop and group."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_item, loop, future), outcome in zip(group, outcomes):
            by_loop.setdefault(loop, []).append((future, outcome))
        for loop, answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


def _settle(answers: list) -> None:
    for future, (ok, value) in answers:
        if future.done():  # the request was cancelled (its client went away)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
