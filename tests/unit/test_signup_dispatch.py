"""The web's mail dispatcher (web/dispatch.py) with a stand-in sender: when its passes start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from nurture.sending.pass_summary import PassStopped, PassSummary
from nurture.web.dispatch import Dispatcher


class Passes:
    """Records when each pass starts; a pass can be held open until released."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.started: list[float] = []
        self.prefixes: list[str | None] = []
        self.release = threading.Event()
        self.release.set()
        self.running = threading.Event()
        self.fail = fail

    def run_pass(self, now, *, key_prefix=None, stop=None, **_kwargs) -> PassSummary:
        self.started.append(time.monotonic())
        self.prefixes.append(key_prefix)
        self.running.set()
        self.release.wait(10)
        self.running.clear()
        if self.fail:
            raise self.fail
        return PassSummary(sent=1)


@contextmanager
def running(passes: Passes, **options) -> Iterator[Dispatcher]:
    """A started dispatcher over ``passes``, stopped afterwards whatever the test did."""
    dispatcher = Dispatcher(passes, **options)
    dispatcher.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop()


def started(dispatcher: Dispatcher, passes: Passes, count: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while len(passes.started) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return len(passes.started) >= count


def test_a_few_signups_settle_into_one_pass():
    passes = Passes()
    with running(passes, settle=0.3, batch=100) as dispatcher:
        woken = time.monotonic()
        for _ in range(5):
            dispatcher.owe(1)
        assert dispatcher.wait_idle(5)
        assert len(passes.started) == 1 and passes.started[0] - woken >= 0.25
        assert passes.prefixes == ["sys:"]


def test_a_batch_worth_of_confirmations_does_not_wait_out_the_settle():
    passes = Passes()
    with running(passes, settle=5, batch=50) as dispatcher:
        woken = time.monotonic()
        dispatcher.owe(30)
        dispatcher.owe(20)
        assert started(dispatcher, passes, 1, timeout=2)
        assert passes.started[0] - woken < 1


def test_while_busy_the_next_pass_starts_as_soon_as_the_last_one_ends():
    """Under a burst the sender never idles for the settle time between passes."""
    passes = Passes()
    with running(passes, settle=5, batch=1) as dispatcher:
        passes.release.clear()
        dispatcher.owe(1)
        assert started(dispatcher, passes, 1)
        dispatcher.owe(1)  # came in while the pass ran (less than a batch: it alone would settle)
        ended = time.monotonic()
        passes.release.set()
        assert started(dispatcher, passes, 2, timeout=2)
        assert passes.started[1] - ended < 1
        assert dispatcher.wait_idle(5)


def test_after_a_failed_pass_the_next_wake_settles_again():
    passes = Passes(fail=PassStopped("mail server unreachable"))
    with running(passes, settle=0.5, batch=1000) as dispatcher:
        passes.release.clear()
        dispatcher.wake()
        time.sleep(0.6)
        assert started(dispatcher, passes, 1)
        dispatcher.wake()  # during the failing pass
        ended = time.monotonic()
        passes.release.set()
        assert started(dispatcher, passes, 2, timeout=3)
        assert passes.started[1] - ended >= 0.4  # no tight loop against a server that is down


def test_a_full_wake_asks_for_everything_due():
    passes = Passes()
    with running(passes, settle=0.05) as dispatcher:
        dispatcher.wake(full=True)
        assert dispatcher.wait_idle(5)
        assert passes.prefixes == [None]
