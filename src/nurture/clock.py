"""The clock: the one place that reads the time.

Code that decides anything takes ``now`` (an aware UTC datetime) or a ``clock`` callable from its
caller, so tests can hand it any instant; only entry points (the CLI, the web app's defaults, the
scheduler) call :func:`utcnow`.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current instant, aware, in UTC."""
    return datetime.now(timezone.utc)
