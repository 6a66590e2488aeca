"""An SMTP sink in its own process for the benchmarks: accepts and counts, keeps nothing.

    python bench/sink.py PORT      prints "ready" when listening, the count on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Counter:
    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 2.0.0 OK"


def main() -> None:
    port = int(sys.argv[1])
    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    controller.stop()
    print(counter.count, flush=True)


if __name__ == "__main__":
    main()
