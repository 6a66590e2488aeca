"""The ``nurture`` command: thin commands over the modules. Errors are one line and a non-zero exit."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer
from rich.console import Console

from nurture.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Email nurture sequences and newsletter for the clinic.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
console = Console(stderr=True, soft_wrap=True)
out = Console()


class Fail(Exception):
    """A user-facing error: printed as one line, exit code 1 (2 for configuration)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def settings() -> Settings:
    return load_settings()


def runtime(settings_: Settings | None = None, **kwargs):
    from nurture.runtime import Runtime

    return Runtime(settings_ or settings(), **kwargs)


def parse_now(value: str | None) -> datetime:
    """``--now`` as an aware UTC instant (a naive value is taken as UTC)."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"--now: not an ISO-8601 time: {value!r} (example: 2026-12-01T09:30:00+01:00)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the current schema."""
    from nurture.migrate import upgrade

    s = settings()
    upgrade(s.database_url)
    console.print(f"database is up to date: {_safe_url(s.database_url)}")


@app.command()
def serve() -> None:
    """Serve the web endpoint (signup, confirm, unsubscribe) at NURTURE_HOST:NURTURE_PORT."""
    _serve(with_scheduler=False)


@app.command()
def run() -> None:
    """The main job: migrate, then the web endpoint and the scheduler in one process."""
    _serve(with_scheduler=True)


def _serve(*, with_scheduler: bool) -> None:
    import threading

    import uvicorn

    from nurture.migrate import upgrade
    from nurture.scheduler import build_scheduler
    from nurture.web import create_app

    s = settings()
    _logging(s.log_level)
    upgrade(s.database_url)
    rt = runtime(s)
    stop = threading.Event()
    scheduler = build_scheduler(rt.sender(), s.send_interval, stop, blocking=False) if with_scheduler else None
    where = f"outbox Maildir {s.outbox_dir}/" if not s.smtp_url else "SMTP " + _safe_url(s.smtp_url)
    console.print(f"[bold]nurture[/] on {s.base_url} · database {_safe_url(s.database_url)} · mail to {where}"
                  + (f" · sending every {s.send_interval} min" if scheduler else ""))
    if scheduler:
        scheduler.start()
    try:
        uvicorn.run(create_app(rt), host=s.host, port=s.port, log_level=s.log_level.lower(), access_log=False)
    finally:
        stop.set()
        if scheduler:
            scheduler.shutdown(wait=True)
        rt.close()


@app.command()
def scheduler() -> None:
    """Run the sending scheduler alone (every NURTURE_SEND_INTERVAL minutes) until SIGTERM."""
    from nurture.scheduler import run_blocking

    s = settings()
    _logging(s.log_level)
    rt = runtime(s)
    try:
        run_blocking(rt.sender(), s.send_interval)
    finally:
        rt.close()


@app.command("send-due")
def send_due(
    now: Annotated[Optional[str], typer.Option(help="Pretend it is this instant (ISO-8601), to fast-forward.")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Send at most this many messages.")] = None,
) -> None:
    """One pass: queue the sequence steps due at NOW and send everything due."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nurture.sender import TransportDown

    instant = parse_now(now)
    rt = runtime()
    try:
        sender = rt.sender()
        if console.is_terminal:
            with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True) as bar:
                task = bar.add_task("send", total=None)
                summary = sender.run_pass(instant, limit=limit, progress=lambda n: bar.advance(task, n))
        else:
            summary = sender.run_pass(instant, limit=limit)
    except TransportDown as exc:
        raise Fail(f"mail server unreachable, nothing was marked sent (run again later): {exc}") from None
    finally:
        rt.close()
    out.print(f"planned {summary.planned}; {summary.line()}")


def _safe_url(url: str) -> str:
    """A URL without its password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


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
