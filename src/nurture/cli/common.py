"""What every command shares: the Typer app, the two consoles, settings and the real parts,
and the rule that errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from nurture.clock import utcnow
from nurture.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Email nurture sequences and newsletter for the clinic.")
console = Console(stderr=True, soft_wrap=True)
# Tables piped to a file or another program are not cut at 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)


class Fail(Exception):
    """A user-facing error: printed as one line, exit code 1 (2 for configuration)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code

def settings() -> Settings:
    return load_settings()

def runtime(settings_: Settings | None = None, *, database: bool = True, **kwargs):
    """The real parts, for commands that send or plan email (they need the templates and, when
    ``database``, a database at the current schema)."""
    from nurture.migrate import SchemaOutOfDate, check_current
    from nurture.runtime import Runtime

    settings_ = settings_ or settings()
    settings_.require_templates()
    rt = Runtime(settings_, **kwargs)
    if database:
        try:
            check_current(rt.engine)
        except SchemaOutOfDate as exc:
            rt.close()
            raise Fail(str(exc)) from None
    return rt

_RELATIVE = re.compile(r"\+\s*(\d+)\s*(d|days?|h|hours?|m|min|minutes?)(?:\s+(\d{1,2}):(\d{2}))?", re.IGNORECASE)


def parse_now(value: str | None, option: str = "--now", *, zone: str = "UTC",
              clock: Callable[[], datetime] = utcnow) -> datetime:
    """An option naming an instant, as an aware UTC datetime; None is now.

    ISO-8601 (``2026-12-03T09:05:00-06:00``; without an offset it is read as UTC, and a note
    says so), or relative to now: ``+2 days``, ``+3 hours``, ``+2 days 09:05`` (that clock time
    on the day, in ``zone``, the clinic's)."""
    now = clock()
    if value is None:
        return now
    relative = _RELATIVE.fullmatch(value.strip())
    if relative:
        amount, unit, hour, minute = relative.groups()
        step = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}[unit[0].lower()]
        moved = now + int(amount) * step
        if hour is None:
            return moved
        if int(hour) > 23 or int(minute) > 59:
            raise Fail(f"{option}: no such time of day: {hour}:{minute}")
        local = moved.astimezone(ZoneInfo(zone)).replace(hour=int(hour), minute=int(minute), second=0, microsecond=0)
        return local.astimezone(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"{option}: not a time: {value!r} (examples: 2026-12-03T09:05:00-06:00, or \"+2 days 09:05\" "
                   f"in the clinic's zone {zone})") from None
    if parsed.tzinfo is None:
        console.print(f"{option} {value} has no time zone: read as UTC", highlight=False)
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)

def instant_line(instant: datetime, zone: str) -> str:
    """How a command names the instant it used: the clinic's local time and UTC."""
    local = instant.astimezone(ZoneInfo(zone))
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()} ({instant:%Y-%m-%d %H:%M} UTC)"

def setup_logging(level: str, log_format: str = "text", *, quiet: bool = False) -> None:
    """Log lines to stderr at ``level`` (NURTURE_LOG_LEVEL) in ``log_format`` (NURTURE_LOG_FORMAT:
    text, or one JSON object a line), addresses and passwords masked (:mod:`nurture.log_format`).
    ``quiet``: a command whose own output is its summary (send-due) shows INFO lines only when
    asked for DEBUG."""
    from nurture.log_format import configure

    if quiet and level.upper() in ("INFO", "NOTSET"):
        level = "WARNING"
    configure(level, log_format)

def safe_url(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url

def broken_templates(broken: dict[str, str], templates_dir) -> str:
    """The message for templates a pass could not render (a content error, so the exit is
    non-zero): each as ``file:line: message`` relative to the templates folder. Their messages
    wait, and go once the file is fixed; others' are not held up."""
    from nurture.feedback.reports import where_in_templates

    lines = "; ".join(where_in_templates(reason, templates_dir) for _, reason in sorted(broken.items()))
    return (f"{len(broken)} template(s) could not be rendered, their messages wait until fixed "
            f"(`nurture templates validate` lists every problem): {lines}")

def main() -> None:
    """Entry point: known errors become one line and an exit code, never a traceback."""
    try:
        app()
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except Fail as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(exc.code)
    except Exception as exc:  # noqa: BLE001 - a bug still gets one line; the traceback goes to the log
        logging.getLogger("nurture").debug("unexpected error", exc_info=True)
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        console.print(f"[red]error:[/] unexpected {type(exc).__name__}: {first} "
                      "(NURTURE_LOG_LEVEL=DEBUG shows the traceback)", highlight=False)
        sys.exit(1)
