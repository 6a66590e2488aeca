"""Commands the operator runs: the main job, the scheduler, a sending pass, explain, stats, migrations."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from nurture.cli.common import (
    Fail,
    app,
    broken_templates,
    console,
    instant_line,
    out,
    parse_now,
    runtime,
    safe_url,
    settings,
    setup_logging,
)

db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database to the current schema."""
    from nurture.db import make_engine
    from nurture.migrate import revisions, upgrade

    s = settings()
    engine = make_engine(s.database_url)
    try:
        before, head = revisions(engine)
    finally:
        engine.dispose()
    upgrade(s.database_url)
    where = safe_url(s.database_url)
    if before is None:
        console.print(f"created the database: {where} (schema {head})", highlight=False)
    elif before != head:
        console.print(f"migrated the database from schema {before} to {head}: {where}", highlight=False)
    else:
        console.print(f"database is up to date: {where} (schema {head})", highlight=False)

HostOption = Annotated[Optional[str], typer.Option(
    "--host", metavar="ADDRESS", show_default=False,
    help="Listen on this address (default NURTURE_HOST, 127.0.0.1: this machine only; 0.0.0.0 is every interface).")]
PortOption = Annotated[Optional[str], typer.Option(
    "--port", metavar="PORT", show_default=False, help="Listen on this port (default NURTURE_PORT, 8000).")]


@app.command()
def serve(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the web endpoint (signup, confirm, unsubscribe) at --host:--port (NURTURE_HOST:NURTURE_PORT)."""
    _serve(host, port, with_scheduler=False)

@app.command()
def run(host: HostOption = None, port: PortOption = None) -> None:
    """The main job: migrate, then the web endpoint and the scheduler in one process."""
    _serve(host, port, with_scheduler=True)

def _serve(host: str | None, port: str | None, *, with_scheduler: bool) -> None:
    import signal
    import threading

    from nurture.cli.listen import bind, host_option, port_option
    from nurture.migrate import upgrade
    from nurture.scheduler import build_scheduler
    from nurture.web import create_app

    s = settings()
    host, port = host_option(host, s.host), port_option(port, s.port)
    sockets = bind(host, port)  # first: a port in use is one line before anything has started
    try:
        setup_logging(s.log_level, s.log_format)
        upgrade(s.database_url)
        rt = runtime(s)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    # uvicorn raises the SIGTERM it caught again once it has shut down; under the default handler
    # that would end the process there, before the scheduler below finishes the message in flight
    # (systemd's stop): a handler that does nothing lets the `finally` run and the exit be 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    stop = threading.Event()
    scheduler = build_scheduler(rt.sending_pass(), s.send_interval, stop, blocking=False,
                                sessions=rt.sessions, deliverer=rt.webhook_deliverer()) if with_scheduler else None
    if s.log_format == "json":  # stderr is a stream of JSON objects: the banner's facts as one of them
        import logging

        logging.getLogger("nurture.serve").info(
            "serving %s on http://%s:%s; database %s; mail to %s; /admin %s; sending %s", s.base_url, host, port,
            safe_url(s.database_url), safe_url(s.smtp_url) if s.smtp_url else f"the folder {s.outbox_dir}/",
            "on" if s.admin_password else "off", f"every {s.send_interval} min" if scheduler else "off")
    else:
        console.print(_banner(s, host, port, sending=scheduler is not None))
    if scheduler:
        scheduler.start()
    try:
        _run_server(create_app(rt, dispatch_process=True), sockets, host, port, s.log_level.lower(),
                    stop if scheduler else None)
    finally:
        for sock in sockets:
            sock.close()
        stop.set()
        if scheduler:
            scheduler.shutdown(wait=True)
        rt.close()

def _run_server(app, sockets, host: str, port: int, log_level: str, stop_sending) -> None:
    """uvicorn on the bound sockets until SIGTERM or Ctrl-C. For ``nurture run`` that signal also
    sets ``stop_sending`` at once, so the scheduler's pass stops handing out mail (it finishes the
    message in flight) while the web side shuts down, as ``nurture scheduler`` does."""
    import logging

    import uvicorn

    from nurture.log_format import uvicorn_log_config

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if stop_sending is not None and not stop_sending.is_set():
                logging.getLogger("nurture.scheduler").info(
                    "stopping (signal %d): finishing the message in flight, releasing claims", sig)
                stop_sending.set()
            super().handle_exit(sig, frame)

    # proxy_headers=False: the app applies NURTURE_TRUSTED_PROXIES itself (create_app); uvicorn's
    # own default would trust X-Forwarded-For from 127.0.0.1, so any local client could name
    # itself anyone (dodging the signup limit and the admin lockout, writing the ledger's IP).
    Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                          proxy_headers=False, log_config=uvicorn_log_config())).run(sockets=sockets)

def _banner(s, host: str, port: int, *, sending: bool):
    """What a person starting the server needs, boxed so it stands out from the log lines after it."""
    from rich.markup import escape
    from rich.panel import Panel

    from nurture.cli.listen import base_url_note, url_for

    where = (f"the folder {s.outbox_dir}/, nothing leaves this machine\n          (`nurture outbox last` shows the newest)"
             if not s.smtp_url else "the SMTP server " + safe_url(s.smtp_url))
    listen = url_for(host, port)
    wrong_port = base_url_note(s.base_url, host, port)
    if wrong_port:  # open what answers; the links in emails would not
        note = escape(wrong_port).replace("\n", "\n          ")
        opening = [f"[bold]Open[/]      {listen}", f"[bold yellow]Links[/]     [yellow]{note}[/]"]
    else:
        opening = [f"[bold]Open[/]      {s.base_url}" + (f"  (listening on {listen})"
                                                        if listen != s.base_url.rstrip("/") else "")]
    lines = [
        *opening,
        f"[bold]Database[/]  {safe_url(s.database_url)}",
        f"[bold]Mail to[/]   {where}",
        "[bold]Admin[/]     " + (f"{s.base_url.rstrip('/')}/admin (user admin)" if s.admin_password
                                  else "off (set NURTURE_ADMIN_PASSWORD to turn /admin on)"),
        "[bold]Sending[/]   " + (f"every {s.send_interval} min" if sending else "off (serve only: run the scheduler or send-due)"),
    ]
    return Panel("\n".join(lines), title="[bold]nurture[/]", title_align="left", border_style="cyan", expand=False,
                 highlight=False)

@app.command()
def scheduler() -> None:
    """Run the sending scheduler alone (every NURTURE_SEND_INTERVAL minutes) until SIGTERM."""
    from nurture.scheduler import run_blocking

    s = settings()
    setup_logging(s.log_level, s.log_format)
    rt = runtime(s)
    try:
        run_blocking(rt.sending_pass(), s.send_interval, sessions=rt.sessions, deliverer=rt.webhook_deliverer())
    finally:
        rt.close()

@app.command("send-due")
def send_due(
    now: Annotated[Optional[str], typer.Option(
        help="Pretend it is this instant, to fast-forward: ISO-8601 with an offset (2026-12-03T09:05:00-06:00), "
             "or relative, \"+2 days 09:05\" (that time in the clinic's zone).")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Send at most this many messages.")] = None,
) -> None:
    """One pass: queue the sequence steps due at NOW and send everything due."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from nurture.clock import utcnow
    from nurture.sending.pass_log import recorded_pass
    from nurture.sending.pass_summary import PassStopped

    s = settings()
    setup_logging(s.log_level, s.log_format, quiet=True)
    instant = parse_now(now, zone=s.timezone)
    rt = runtime(s)
    try:
        passes = rt.sending_pass()
        with recorded_pass(rt.sessions, utcnow) as record:
            if console.is_terminal:
                with Progress(TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                              console=console, transient=True) as bar:
                    task = bar.add_task("send", total=None)
                    record.summary = passes.run(instant, limit=limit, progress=lambda n: bar.advance(task, n))
            else:
                record.summary = passes.run(instant, limit=limit)
        summary = record.summary
    except PassStopped as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"as of {instant_line(instant, s.timezone)}: planned {summary.planned}; {summary.line()}",
              highlight=False)
    if summary.broken:
        raise Fail(broken_templates(summary.broken, s.templates_dir))

@app.command()
def explain(
    address: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    now: Annotated[Optional[str], typer.Option(help="Explain as of this instant (ISO-8601).")] = None,
) -> None:
    """Show one subscriber's timeline: what was sent when, what comes next, or why nothing will."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from nurture.feedback.timeline import build_timeline
    from nurture.people.validation import InvalidInput, normalise_email
    from nurture.sending.journey import Planner

    try:
        email = normalise_email(address)
    except InvalidInput as exc:
        raise Fail(exc.message) from None
    s = settings()
    instant = parse_now(now, zone=s.timezone)
    rt = runtime(s)
    try:
        with rt.sessions() as session:
            timeline = build_timeline(session, email, now=instant, planner=Planner.from_settings(s),
                                      secret=s.secret, from_header=s.mail_from)
    finally:
        rt.close()
    if timeline is None:
        raise Fail(f"no subscriber with the address {email}")
    out.print(Text(f"{timeline.email} · {timeline.status} · time zone {timeline.timezone}", style="bold"))
    table = Table("when (UTC)", "their local time", "what", "detail", show_lines=False)
    for entry in timeline.entries:
        table.add_row(f"{entry.at:%Y-%m-%d %H:%M}", f"{timeline.local(entry.at):%a %d %b %H:%M}",
                      Text(entry.what), Text(entry.detail))
    out.print(table)
    # One style for the label, none for the rest: rich's highlighter would colour each number differently.
    if timeline.next_at is not None:
        out.print(f"[bold cyan]next:[/] {timeline.next_step}, scheduled for "
                  f"{timeline.local(timeline.next_at):%A %d %B %Y at %H:%M %Z} their time "
                  f"({timeline.next_at:%Y-%m-%d %H:%M} UTC)", highlight=False)
    else:
        out.print(f"[bold cyan]nothing more will be sent:[/] {escape(timeline.why_nothing or '')}", highlight=False)

@app.command()
def stats(
    since: Annotated[Optional[str], typer.Option(help="Only people who signed up since this date (ISO-8601).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The funnel: signups, confirmations, then each step (sent, clicked, unsubscribed, bounced),
    consultation clicks as the goal, and the broadcasts."""
    import json

    from rich.table import Table

    from nurture.content.sequences import TemplateFormatError
    from nurture.feedback import funnel_figures, reports
    from nurture.sending.journey import Planner

    s = settings()
    start = parse_now(since, "--since") if since else None
    rt = runtime(s)
    try:
        sequence = Planner.from_settings(s).sequence()
        if sequence is None:
            raise Fail(f"no sequence {s.sequence!r} in {s.templates_dir}")
        with rt.sessions() as session:
            funnel = funnel_figures.funnel(session, since=start, sequence=sequence, consultation_url=s.consultation_url,
                                    trackable=funnel_figures.trackable_links(rt.renderer, (st.template for st in sequence.steps),
                                                                      track_clicks=s.track_clicks))
            funnel = funnel_figures.with_bookings(session, funnel)
            trouble = reports.problems(session)
    except TemplateFormatError as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    if as_json:
        sys.stdout.write(json.dumps(funnel.to_dict(), indent=2) + "\n")
        return

    def pct(rate: float | None) -> str:
        return "–" if rate is None else f"{rate:.1%}"

    scope = f"people who signed up since {start:%Y-%m-%d}" if start else "everyone"
    out.print(f"[bold]{s.clinic_name}[/] · sequence {funnel.sequence} · {scope}")
    out.print(f"signups {funnel.signups} · confirmed {funnel.confirmed} ({pct(funnel.confirm_rate)}) · "
              f"consultation clicks {funnel.goal} ({pct(funnel.goal_rate)} of confirmed)")
    table = Table("#", "step", "sent", "not yet due", "stopped", "clicked", "rate", "consultation", "unsubscribed",
                  "bounced")
    for step in funnel.steps:
        clicks = (("no links", "") if step.trackable is False else (str(step.clickers), pct(step.click_rate)))
        table.add_row(str(step.position + 1), step.key, str(step.sent), str(step.not_yet_due), str(step.stopped),
                      *clicks, str(step.goal_clickers), str(step.unsubscribed), str(step.bounced))
    out.print(table)
    booked = funnel.bookings
    out.print(f"booked a consultation {booked.booked} ({pct(funnel.booking_rate)} of confirmed), "
              f"{booked.after_click} after clicking the consultation link · credited to the last email before "
              "booking: " + (", ".join(f"{key} {n}" for key, n in sorted(booked.by_last_email.items())) or "–")
              + " · to the consultation link clicked last: "
              + (", ".join(f"{key} {n}" for key, n in sorted(booked.by_click.items())) or "–"), highlight=False)
    out.print("not yet due: still in the series, it comes on its day · stopped: left, bounced, or that email failed · "
              "no links: nothing in that email to click but the unsubscribe links and the shared footer", highlight=False)
    if trouble:
        out.print(f"not sent: {trouble.retrying} retrying, {trouble.failed} failed, {trouble.unknown} unknown "
                  "(nurture explain EMAIL shows one person's)")
        for key, reason in trouble.latest:
            out.print(f"  {key}: {reason}", highlight=False)
    if funnel.broadcasts:
        table = Table("broadcast", "template", "audience", "status", "sent", "clicked", "rate", "unsubscribed",
                      "bounced")
        for b in funnel.broadcasts:
            table.add_row(str(b.id), b.template, b.audience, b.status, str(b.sent), str(b.clickers),
                          pct(b.click_rate), str(b.unsubscribed), str(b.bounced))
        out.print(table)


outbox_app = typer.Typer(no_args_is_help=True, help="The local Maildir outbox (development: where mail goes "
                                                    "when no SMTP server is set).")
app.add_typer(outbox_app, name="outbox")


@outbox_app.command("last")
def outbox_last(
    links: Annotated[bool, typer.Option("--links", help="Print only its links, one a line, decoded.")] = False,
    save: Annotated[Optional[str], typer.Option("--save", metavar="FILE.eml",
                                                help="Also write the message as a .eml file a mail client opens.")] = None,
) -> None:
    """Show the newest message in the outbox decoded: its headers and plain text, or its links."""
    from pathlib import Path

    from nurture.sending.outbox_files import OutboxEmpty, newest_message

    s = settings()
    if s.smtp_url:
        raise Fail(f"mail goes to the SMTP server {safe_url(s.smtp_url)}, not to a local outbox folder")
    try:
        found = newest_message(Path(s.outbox_dir))
    except OutboxEmpty as exc:
        raise Fail(str(exc)) from None
    if save:
        try:
            Path(save).write_bytes(found.raw)
        except OSError as exc:
            raise Fail(f"cannot write {save}: {exc.strerror}") from None
        console.print(f"saved {found.path.name} as {save}", highlight=False)
    if links:
        for url in found.links:
            out.print(url, highlight=False, soft_wrap=True)
        return
    for name in ("Date", "From", "To", "Subject"):
        out.print(f"{name}: {found.headers.get(name, '')}", highlight=False)
    out.print(f"File: {found.path}\n", highlight=False)
    out.print(found.text, highlight=False, markup=False)
