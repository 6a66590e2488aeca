"""Sends mail the web process owes right away (confirmation emails, the welcome step) in a
background thread, so a signup's confirmation arrives in seconds, not at the next scheduler run.

``nurture serve`` runs that thread in a process of its own (:class:`DispatcherProcess`): in the
web process it shared one interpreter lock (the GIL) with the event loop, so under a burst of
signups either the signups or their confirmations waited for the other. Tests with an
in-memory transport keep it in-process (:class:`Dispatcher`); both have the same interface."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from nurture.clock import utcnow
from nurture.config import Settings
from nurture.message_key import SYSTEM_PREFIX
from nurture.sending.pass_summary import PassStopped
from nurture.sending.sender import Sender

log = logging.getLogger(__name__)


class Dispatcher:
    """Wakes on demand. After a quiet spell, wake-ups within ``settle`` seconds coalesce into one
    pass (sooner once ``batch`` confirmations are waiting), so a few signups cost one claim and a
    few transactions instead of a handful per email. While busy (more came in during a pass),
    the next pass starts as soon as the last one ends, with what came meanwhile as its batch:
    under a burst, sending never idles while anything is due."""

    def __init__(self, sender: Sender, clock: Callable[[], datetime] = utcnow, settle: float = 0.25, *,
                 batch: int = 100, idle=None) -> None:
        self.sender = sender
        self.clock = clock
        self.settle = settle
        self.batch = batch
        self._wake = threading.Event()
        self._full = False
        self._stop = threading.Event()
        # Set while nothing is pending or running. A process-shared Event when run by
        # DispatcherProcess, which owns it: the child must not set it when it starts, or a wake-up
        # sent while the child was starting would look finished before it ran.
        if idle is None:
            idle = threading.Event()
            idle.set()
        self._idle = idle
        self._thread = threading.Thread(target=self._loop, name="nurture-dispatch", daemon=True)
        self._arrived = threading.Condition()
        self._waiting = 0  # confirmations owed since the running or last pass began

    def start(self) -> None:
        self._thread.start()

    def wake(self, *, full: bool = False) -> None:
        """Ask for a pass: confirmations only, or (``full``) everything due, e.g. after a confirm."""
        self._full = self._full or full
        self._idle.clear()
        self._wake.set()

    def owe(self, confirmations: int) -> None:
        """The web committed this many new confirmation emails: wake for them."""
        with self._arrived:
            self._waiting += confirmations
            if self._waiting >= self.batch:
                self._arrived.notify()
        self.wake()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and shutdown: wait until no pass is pending or running."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._arrived:
            self._arrived.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _settle(self) -> None:
        """Let more arrive: ``settle`` seconds, or until a batch's worth is waiting."""
        deadline = time.monotonic() + self.settle
        with self._arrived:
            while self._waiting < self.batch and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._arrived.wait(left)

    def _loop(self) -> None:
        busy = False
        while not self._stop.is_set():
            self._wake.wait(timeout=60)
            if self._stop.is_set():
                break
            if not busy:
                self._settle()
            self._wake.clear()
            with self._arrived:
                self._waiting = 0
            full, self._full = self._full, False
            try:
                summary = self.sender.run_pass(self.clock(), key_prefix=None if full else SYSTEM_PREFIX, stop=self._stop)
                if summary.sent or summary.failed or summary.retried:
                    log.info("immediate mail: %s", summary.line())
                busy = self._wake.is_set()  # more came in while this pass ran
            except PassStopped as exc:
                busy = False
                log.error("immediate sending stopped, will retry at the next wake-up: %s", exc)
            except Exception:  # noqa: BLE001 - the web must keep serving; the scheduler retries
                busy = False
                log.exception("immediate sending failed; the scheduler will pick the mail up")
            if not self._wake.is_set():
                self._idle.set()


# The process records confirmations in chunks of this many. Each chunk is a write transaction, and
# on SQLite every one makes the web's signup writer wait for the lock: five times fewer took
# signups under load from about 920/s to 1,100-1,175/s and their p99 from 114 ms to 67-75 ms
# (bench/bench_signup.py, 2026-12-01). The price: a crash of this process may repeat up to
# threads x 100 confirmations (each the same message, with the same Message-ID), not threads x 20.
CONFIRMATION_CHUNK = 100


class DispatcherProcess:
    """A :class:`Dispatcher` in a child process of its own, with its own runtime built from
    ``settings``: the web process only tells it what it owes. Started again if it ever dies (a
    confirmation owed meanwhile is still in the outbox; the next wake-up or the scheduler sends it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")  # the web process runs threads: never fork it
        self._idle = self._context.Event()
        self._idle.set()
        self._process = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            if self._process is not None:
                log.error("the sending process for confirmations ended (exit code %s); starting it again",
                          self._process.exitcode)
            # New ones each time: a child killed inside get() or set() dies holding their locks.
            self._commands = self._context.Queue()
            self._idle = self._context.Event()
            self._idle.set()
            self._process = self._context.Process(
                target=_dispatch_in_child, args=(self.settings, self._commands, self._idle, os.getpid()),
                name="nurture-dispatch", daemon=True)
            self._process.start()

    def owe(self, confirmations: int) -> None:
        self._tell("owe", confirmations)

    def wake(self, *, full: bool = False) -> None:
        self._tell("wake", full)

    def _tell(self, kind: str, value) -> None:
        if self._process is None or not self._process.is_alive():
            self.start()
        self._idle.clear()  # before the child hears it, so wait_idle() never returns too early
        self._commands.put((kind, value))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        return self._idle.wait(timeout)

    def stop(self) -> None:
        if self._process is None:
            return
        self._commands.put(("stop", None))
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()


def _dispatch_in_child(settings: Settings, commands, idle, parent: int) -> None:
    from nurture.runtime import Runtime
    from nurture.sending_processes import become_child

    become_child(parent, settings.log_level, settings.log_format)  # the web process stops it through ``commands``
    runtime = Runtime(settings)
    sender = runtime.sender()
    sender.settings = replace(sender.settings, chunk_size=CONFIRMATION_CHUNK)
    dispatcher = Dispatcher(sender, idle=idle)
    dispatcher.start()
    try:
        while True:
            kind, value = commands.get()
            if kind == "owe":
                dispatcher.owe(value)
            elif kind == "wake":
                dispatcher.wake(full=value)
            else:
                break
    finally:
        dispatcher.stop()
        runtime.close()
