"""Live reload: a watchfiles task notices a saved template and wakes the ``/events``
Server-Sent-Events streams the open pages listen to. Each stream also re-reads the templates'
stamp every few seconds, so a folder where file events do not arrive (some network and container
mounts) still reloads."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from nurture.web.studio_catalogue import is_template, relative, templates_stamp

log = logging.getLogger(__name__)
POLL_SECONDS = 2.0  # how often an /events stream re-reads the stamp when no file event came


class TemplateWatcher:
    """Holds the templates' current stamp and wakes waiting /events streams when it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.stamp = templates_stamp(self.directory)
        self.changed: list[str] = []
        self.closed = False  # the server is stopping: streams end so it need not cut them off
        self._event = asyncio.Event()

    def refresh(self, changed: Iterable[str] = ()) -> bool:
        stamp = templates_stamp(self.directory)
        if stamp == self.stamp:
            return False
        self.stamp, self.changed = stamp, sorted(set(changed))
        self.wake()
        return True

    def wake(self) -> None:
        """Wake every waiting stream (to see a new stamp, or that the server is stopping)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def close(self) -> None:
        self.closed = True
        self.wake()

    async def wait(self, stamp: str, timeout: float) -> None:
        """Return when the stamp differs from ``stamp`` or the watcher is closed, or after ``timeout``
        (having re-read the stamp)."""
        if stamp != self.stamp or self.closed:
            return
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except asyncio.TimeoutError:
            self.refresh()

    async def run(self, stop: asyncio.Event) -> None:
        from watchfiles import awatch

        try:
            async for changes in awatch(self.directory, stop_event=stop, step=50, debounce=400,
                                        watch_filter=lambda _change, path: is_template(os.path.basename(path))):
                self.refresh(relative(self.directory, path) for _, path in changes)
        except Exception:  # noqa: BLE001 - no file events: the streams' own polling still reloads pages
            log.warning("watching %s failed; pages reload every %s s instead", self.directory, POLL_SECONDS, exc_info=True)


async def event_stream(watcher: TemplateWatcher, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
    """The ``/events`` stream: a hello with the current stamp, then a change event (with the
    saved files) each time it changes, until the client goes (``disconnected``) or the watcher
    closes."""
    watcher.refresh()
    stamp = watcher.stamp
    yield f"retry: 1000\nevent: hello\ndata: {stamp}\n\n"
    quiet = 0.0
    while not watcher.closed and not await disconnected():
        await watcher.wait(stamp, POLL_SECONDS)
        if watcher.stamp != stamp:
            stamp, quiet = watcher.stamp, 0.0
            yield f"event: change\ndata: {json.dumps({'stamp': stamp, 'files': watcher.changed})}\n\n"
        else:
            quiet += POLL_SECONDS
            if quiet >= 20:  # a comment now and then, so proxies and the browser keep the stream open
                quiet = 0.0
                yield ": ping\n\n"
