"""Sends mail the web process owes right away (confirmation emails, the welcome step) in a
background thread, so a signup's confirmation arrives in seconds, not at the next scheduler run."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from nurture.sender import PassStopped, Sender, utcnow

log = logging.getLogger(__name__)


class Dispatcher:
    """Wakes on demand; wake-ups within ``settle`` seconds coalesce into one pass, so a burst of
    signups costs one claim and a few transactions instead of a handful per email."""

    def __init__(self, sender: Sender, clock: Callable[[], datetime] = utcnow, settle: float = 0.25) -> None:
        self.sender = sender
        self.clock = clock
        self.settle = settle
        self._wake = threading.Event()
        self._full = False
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._loop, name="nurture-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self, *, full: bool = False) -> None:
        """Ask for a pass: confirmations only, or (``full``) everything due, e.g. after a confirm."""
        self._full = self._full or full
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and shutdown: wait until no pass is pending or running."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=60)
            if self._stop.is_set():
                break
            self._stop.wait(self.settle)
            self._wake.clear()
            full, self._full = self._full, False
            try:
                summary = self.sender.run_pass(self.clock(), key_prefix=None if full else "sys:", stop=self._stop)
                if summary.sent or summary.failed or summary.retried:
                    log.info("immediate mail: %s", summary.line())
            except PassStopped as exc:
                log.error("immediate sending stopped, will retry at the next wake-up: %s", exc)
            except Exception:  # noqa: BLE001 - the web must keep serving; the scheduler retries
                log.exception("immediate sending failed; the scheduler will pick the mail up")
            if not self._wake.is_set():
                self._idle.set()
