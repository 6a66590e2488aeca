"""What every command shares: the Typer app, the two consoles, settings and the real parts,
and the rule that errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

import typer
from rich.console import Console

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

def parse_now(value: str | None, option: str = "--now") -> datetime:
    """An ISO-8601 option as an aware UTC instant (a naive value is taken as UTC); None is now."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"{option}: not an ISO-8601 time: {value!r} (example: 2026-12-01T09:30:00+01:00)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)

def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

def safe_url(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url

def broken_templates(broken: dict[str, str]) -> str:
    """The banner for templates a pass could not render: their messages wait, retried with
    backoff, until the template is fixed (`nurture templates validate` shows where)."""
    lines = "; ".join(f"{name}: {reason}" for name, reason in sorted(broken.items()))
    return (f"{len(broken)} template(s) could not be rendered, their messages wait until fixed "
            f"(run `nurture templates validate`): {lines}")

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
