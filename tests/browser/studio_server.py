"""The studio app served on a free loopback port in a thread, for the browser tests that drive it."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI


@contextmanager
def serving_studio(app: FastAPI) -> Iterator[str]:
    """Its URL once /healthz answers; on leaving, open pages' event streams are ended (what
    `nurture studio` does on Ctrl-C) and the server must be gone within 4 s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # bound first and handed to uvicorn: no window to lose the port in
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="studio", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and thread.is_alive(), "the studio did not start"
                time.sleep(0.05)
        yield url
    finally:
        app.state.close_streams()
        server.should_exit = True
        started = time.monotonic()
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "the studio did not shut down"
    assert time.monotonic() - started < 4, "an /events stream held the shutdown up"
