"""Sends mail the web process owes right away (confirmation emails, the welcome step) in a
background thread, so a signup's confirmation arrives in seconds, not at the next scheduler run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from nurture.sender import PassStopped, Sender, utcnow

log = logging.getLogger(__name__)


class Dispatcher:
    """Wakes on demand. After a quiet spell, wake-ups within ``settle`` seconds coalesce into one
    pass (sooner once ``batch`` confirmations are waiting), so a few signups cost one claim and a
    few transactions instead of a handful per email. While busy (more came in during a pass),
    the next pass starts as soon as the last one ends, with what came meanwhile as its batch:
    under a burst, sending never idles while anything is due."""

    def __init__(self, sender: Sender, clock: Callable[[], datetime] = utcnow, settle: float = 0.25, *,
                 batch: int = 100) -> None:
        self.sender = sender
        self.clock = clock
        self.settle = settle
        self.batch = batch
        self._wake = threading.Event()
        self._full = False
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
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
                summary = self.sender.run_pass(self.clock(), key_prefix=None if full else "sys:", stop=self._stop)
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
