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
broadcast_app = typer.Typer(no_args_is_help=True, help="Newsletter issues sent once to an audience.")
app.add_typer(broadcast_app, name="broadcast")
bounces_app = typer.Typer(no_args_is_help=True, help="Returned mail and spam complaints.")
app.add_typer(bounces_app, name="bounces")
subscribers_app = typer.Typer(no_args_is_help=True, help="Import, export, and people's data rights.")
app.add_typer(subscribers_app, name="subscribers")
templates_app = typer.Typer(no_args_is_help=True, help="Check and preview the email templates marketing edits.")
app.add_typer(templates_app, name="templates")
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
    from nurture.runtime import Runtime

    from nurture.migrate import SchemaOutOfDate, check_current

    settings_ = settings_ or settings()
    settings_.require_templates()
    try:
        if database:
            check_current(settings_.database_url)
    except SchemaOutOfDate as exc:
        raise Fail(str(exc)) from None
    return Runtime(settings_, **kwargs)


def parse_now(value: str | None, option: str = "--now") -> datetime:
    """An ISO-8601 option as an aware UTC instant (a naive value is taken as UTC); None is now."""
    if value is None:
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Fail(f"{option}: not an ISO-8601 time: {value!r} (example: 2026-12-01T09:30:00+01:00)") from None
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

    from nurture.sender import CircuitOpen, TransportDown

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
    except CircuitOpen as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"planned {summary.planned}; {summary.line()}")


@app.command()
def explain(
    address: Annotated[str, typer.Argument(metavar="EMAIL", help="The subscriber's email address.")],
    now: Annotated[Optional[str], typer.Option(help="Explain as of this instant (ISO-8601).")] = None,
) -> None:
    """Show one subscriber's timeline: what was sent when, what comes next, or why nothing will."""
    from rich.table import Table
    from rich.text import Text

    from nurture.journey import Planner
    from nurture.timeline import build_timeline
    from nurture.validation import InvalidInput, normalise_email

    try:
        email = normalise_email(address)
    except InvalidInput as exc:
        raise Fail(exc.message) from None
    instant = parse_now(now)
    s = settings()
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
    if timeline.next_at is not None:
        out.print(f"next: {timeline.next_step} at {timeline.local(timeline.next_at):%A %d %B %Y %H:%M %Z} "
                  f"({timeline.next_at:%Y-%m-%d %H:%M} UTC)")
    else:
        out.print(f"nothing more will be sent: {timeline.why_nothing}")


@templates_app.command("validate")
def templates_validate() -> None:
    """Check every email template; prints file:line messages and exits 1 on any error."""
    from nurture.template_checks import check_templates

    s = settings()
    s.require_templates()
    problems = check_templates(s.templates_dir, base_url=s.base_url, dev=s.is_dev, clinic=s.clinic)
    for problem in problems:
        colour = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{colour}]{problem.severity}[/] ", end="")
        console.print(str(problem), markup=False, highlight=False)
    errors = sum(p.severity == "error" for p in problems)
    if errors:
        raise Fail(f"{errors} problem(s) in {s.templates_dir}: fix them before anyone gets an email")
    console.print(f"templates OK: {s.templates_dir}" + (f" ({len(problems)} warning(s))" if problems else ""))


@templates_app.command("preview")
def templates_preview(
    key: Annotated[str, typer.Argument(help="The email's key (front matter), e.g. welcome-history, or 'confirm'.")],
    format: Annotated[str, typer.Option("--format", help="html, text or eml")] = "html",
    to: Annotated[Optional[str], typer.Option(help="Send a test copy to this address instead of printing.")] = None,
) -> None:
    """Print an email rendered with sample data, or send a test copy to one address."""
    from nurture.messages import build_message, sender_domain
    from nurture.rendering import RenderError
    from nurture.sequences import find_email
    from nurture.validation import InvalidInput, normalise_email

    if format not in ("html", "text", "eml"):
        raise Fail("--format must be html, text or eml")
    s = settings()
    rt = runtime(s, database=False)
    try:
        step = find_email(s.templates_dir, key)
        if step is None:
            raise Fail(f"no email with the key {key!r} in {s.templates_dir} (see `nurture studio` for the list)")
        try:
            rendered = rt.renderer.render(step.template, rt.renderer.sample_recipient())
        except RenderError as exc:
            raise Fail(str(exc)) from None
        sample = rt.renderer.sample_recipient()
        now = datetime.now(timezone.utc)
        recipient = "test@example.com"
        if to is not None:
            try:
                recipient = normalise_email(to)
            except InvalidInput as exc:
                raise Fail(f"--to: {exc.message}") from None
            rendered = rendered.__class__(subject=f"[TEST] {rendered.subject}", html=rendered.html,
                                          text=rendered.text, preheader=rendered.preheader)
        data = build_message(
            rendered, from_header=s.mail_from, to=recipient,
            message_id=f"<preview.{step.key}.{int(now.timestamp())}@{sender_domain(s.mail_from)}>", date=now,
            unsubscribe_url=sample.get("unsubscribe_url") if not step.template.startswith("system/") else None,
            list_id=None,
        )
        if to is None:
            body = {"html": rendered.html, "text": rendered.text, "eml": data.decode("ascii", "replace")}[format]
            sys.stdout.write(body if body.endswith("\n") else body + "\n")
            return
        from email.utils import parseaddr

        from nurture.transports import NoReply, Unreachable

        try:
            reply = rt.transport.send(parseaddr(s.mail_from)[1], recipient, data)
        except (Unreachable, NoReply) as exc:
            raise Fail(f"test copy not sent: {exc}") from None
        if not 200 <= reply.code < 300:
            raise Fail(f"test copy refused by the server: {reply}")
        console.print(f"test copy of {step.key} sent to {recipient}: {reply}", highlight=False)
    finally:
        rt.close()


@app.command()
def studio(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 8001,
) -> None:
    """A local page for marketing: every email in order, rendered at desktop and phone widths,
    its text and source, validation messages, a journey view; reloads when a file is saved."""
    from nurture.web.studio import run_studio

    s = settings()
    s.require_templates()
    console.print(f"studio on http://127.0.0.1:{port} · templates {s.templates_dir} · Ctrl-C to stop")
    run_studio(s, host="127.0.0.1", port=port)


@broadcast_app.command("create")
def broadcast_create(
    template: Annotated[str, typer.Argument(help="The newsletter's key (front matter), e.g. 2026-12-winter.")],
    audience: Annotated[str, typer.Option(help="all, finished (the sequence), or tag:NAME.")] = "all",
    at: Annotated[Optional[str], typer.Option(help="When it goes (ISO-8601); default: now, via the scheduler.")] = None,
    track_opens: Annotated[bool, typer.Option("--track-opens", help="Add the open pixel (off by default).")] = False,
    now: Annotated[Optional[str], typer.Option(help="Pretend it is this instant (ISO-8601).")] = None,
) -> None:
    """Create a broadcast: the audience is fixed now; it goes at --at through the scheduler."""
    from nurture import broadcasts
    from nurture.db import transaction
    from nurture.journey import Planner
    from nurture.sequences import TemplateFormatError, load_newsletters

    instant = parse_now(now)
    send_at = parse_now(at, "--at") if at else instant
    s = settings()
    rt = runtime(s)
    planner = Planner.from_settings(s)
    try:
        newsletters = load_newsletters(s.templates_dir)
        if template not in newsletters:
            known = ", ".join(sorted(newsletters)) or "none"
            raise Fail(f"no newsletter with the key {template!r} (known: {known})")
        with transaction(rt.sessions) as session:
            broadcast = broadcasts.create(session, newsletter=newsletters[template], audience=audience,
                                          send_at=send_at, now=instant, sequence=planner.sequence(),
                                          window=planner.window, track_opens=track_opens)
    except (broadcasts.BroadcastError, TemplateFormatError) as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"broadcast {broadcast.id}: {template} to {broadcast.recipients} people ({audience}), "
              f"from {send_at:%Y-%m-%d %H:%M} UTC")


@broadcast_app.command("list")
def broadcast_list() -> None:
    """Every broadcast with its state and how many copies are sent, queued or failed."""
    from rich.table import Table

    from nurture import broadcasts

    rt = runtime()
    try:
        with rt.sessions() as session:
            rows = broadcasts.list_broadcasts(session)
    finally:
        rt.close()
    table = Table("id", "template", "audience", "goes at (UTC)", "state", "recipients", "sent", "queued", "failed")
    for row in rows:
        b, c = row.broadcast, row.counts
        table.add_row(str(b.id), b.template, b.audience, f"{b.send_at:%Y-%m-%d %H:%M}", row.state,
                      str(b.recipients), str(c.get("sent", 0)),
                      str(sum(c.get(k, 0) for k in ("queued", "retry", "sending", "unknown"))), str(c.get("failed", 0)))
    out.print(table)


@broadcast_app.command("send")
def broadcast_send(
    broadcast_id: Annotated[int, typer.Argument(metavar="ID")],
    include_new: Annotated[bool, typer.Option("--include-new", help="Also people who subscribed since it was created.")] = False,
    now: Annotated[Optional[str], typer.Option(help="Pretend it is this instant (ISO-8601).")] = None,
) -> None:
    """Send a broadcast now (what is already sent is never sent again)."""
    from nurture import broadcasts
    from nurture.db import transaction
    from nurture.journey import Planner
    from nurture.sender import CircuitOpen, TransportDown

    instant = parse_now(now)
    s = settings()
    rt = runtime(s)
    planner = Planner.from_settings(s)
    try:
        with transaction(rt.sessions) as session:
            added = broadcasts.include_new(session, broadcast_id, now=instant, sequence=planner.sequence(),
                                           window=planner.window) if include_new else 0
            due = broadcasts.send_now(session, broadcast_id, now=instant, window=planner.window)
        summary = rt.sender().run_pass(instant, key_prefix=f"bcast:{broadcast_id}")
    except (broadcasts.BroadcastError, CircuitOpen) as exc:
        raise Fail(str(exc)) from None
    except TransportDown as exc:
        raise Fail(f"mail server unreachable, nothing was marked sent (run again later): {exc}") from None
    finally:
        rt.close()
    later = f"; {due - summary.sent} wait for a day without a sequence email" if due > summary.sent else ""
    out.print(f"broadcast {broadcast_id}: {summary.line()}" + (f"; {added} new people added" if added else "") + later)


@broadcast_app.command("cancel")
def broadcast_cancel(broadcast_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Stop a broadcast: copies not yet sent are cancelled."""
    from nurture import broadcasts
    from nurture.db import transaction

    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            stopped = broadcasts.cancel(session, broadcast_id)
    except broadcasts.BroadcastError as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(f"broadcast {broadcast_id} cancelled: {stopped} copies will not be sent")


@bounces_app.command("ingest")
def bounces_ingest(
    source: Annotated[Optional[str], typer.Argument(metavar="PATH", help="A Maildir folder or an mbox file.")] = None,
    imap: Annotated[bool, typer.Option("--imap", help="Read NURTURE_BOUNCE_IMAP_URL instead of PATH.")] = False,
) -> None:
    """Read returned mail and complaints: hard bounces and complaints suppress at once,
    three soft bounces in 15 days suppress too."""
    from pathlib import Path

    from nurture import bounces
    from nurture.sender import utcnow

    s = settings()
    if imap == (source is not None):
        raise Fail("give either PATH or --imap")
    if imap and not s.bounce_imap_url:
        raise Fail("--imap needs NURTURE_BOUNCE_IMAP_URL (imaps://user:password@host/INBOX)")
    rt = runtime(s)
    try:
        messages = bounces.read_imap(s.bounce_imap_url) if imap else bounces.read_maildir_or_mbox(Path(source))
        report = bounces.ingest(rt.sessions, messages, now=utcnow(), secret=s.secret, from_header=s.mail_from)
    except (ValueError, OSError) as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    out.print(report.summary())


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[str, typer.Argument(metavar="FILE.csv", help="Columns: email, consent, first_name, timezone.")],
    confirmed: Annotated[bool, typer.Option("--confirmed", help="Consent was given elsewhere: no confirmation email.")] = False,
    consent_source: Annotated[Optional[str], typer.Option(help="With --confirmed: how consent was obtained.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; write nothing.")] = False,
) -> None:
    """Import people from a CSV file. Without --confirmed each new person gets a confirmation
    email (double opt-in), sent by the next send-due or the scheduler. Nobody who unsubscribed,
    bounced, complained or was erased is ever brought back. Importing twice changes nothing."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from nurture.sender import utcnow
    from nurture.subscriber_files import CsvImportError, import_csv

    s = settings()
    rt = runtime(s)
    try:
        with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("import", total=None)
            report = import_csv(
                rt.sessions, file, now=utcnow(), default_timezone=s.timezone, confirmed=confirmed,
                consent_source=consent_source, dry_run=dry_run, confirmations_per_day=s.confirmations_per_day,
                progress=lambda n: bar.advance(task, n), on_total=lambda n: bar.update(task, total=n),
            )
    except (CsvImportError, OSError) as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    for row in report.rejected:
        console.print(f"line {row.line}: {escape(row.email)!s}: {escape(row.reason)}", highlight=False)
    out.print(report.summary())


@subscribers_app.command("export")
def subscribers_export(
    file: Annotated[Optional[str], typer.Argument(metavar="[FILE.csv]", help="Default: standard output.")] = None,
) -> None:
    """Export everyone who has an address on file, as CSV."""
    from nurture.subscriber_files import export_csv

    rt = runtime()
    try:
        with rt.sessions() as session:
            if file is None:
                count = export_csv(session, sys.stdout)
            else:
                try:
                    with open(file, "w", newline="", encoding="utf-8") as handle:
                        count = export_csv(session, handle)
                except OSError as exc:
                    raise Fail(f"cannot write {file}: {exc.strerror}") from None
    finally:
        rt.close()
    console.print(f"exported {count} subscribers" + (f" to {file}" if file else ""))


@subscribers_app.command("export-personal")
def subscribers_export_personal(address: Annotated[str, typer.Argument(metavar="EMAIL")]) -> None:
    """Everything held about one person, as JSON (consent ledger included): a subject access request."""
    import json

    from nurture.data_rights import export_personal
    from nurture.validation import InvalidInput

    rt = runtime()
    try:
        with rt.sessions() as session:
            data = export_personal(session, address)
    except InvalidInput as exc:
        raise Fail(exc.message) from None
    finally:
        rt.close()
    if data is None:
        raise Fail(f"nothing is held about {address}")
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@subscribers_app.command("erase")
def subscribers_erase(address: Annotated[str, typer.Argument(metavar="EMAIL")]) -> None:
    """Erase one person's personal data; a hashed tombstone keeps the address suppressed for imports."""
    from nurture.data_rights import erase
    from nurture.db import transaction
    from nurture.sender import utcnow
    from nurture.validation import InvalidInput

    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            erased = erase(session, address, now=utcnow())
    except InvalidInput as exc:
        raise Fail(exc.message) from None
    finally:
        rt.close()
    if not erased:
        raise Fail(f"nothing to erase for {address} (unknown, or erased already)")
    out.print(f"erased {address}: personal data removed, counts kept, the address stays suppressed")


@app.command()
def stats(
    since: Annotated[Optional[str], typer.Option(help="Only people who signed up since this date (ISO-8601).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The funnel: signups, confirmations, then each step (sent, clicked, unsubscribed, bounced),
    consultation clicks as the goal, and the broadcasts."""
    import json

    from rich.table import Table

    from nurture import reports
    from nurture.journey import Planner
    from nurture.sequences import TemplateFormatError

    s = settings()
    start = parse_now(since, "--since") if since else None
    rt = runtime(s)
    try:
        sequence = Planner.from_settings(s).sequence()
        if sequence is None:
            raise Fail(f"no sequence {s.sequence!r} in {s.templates_dir}")
        with rt.sessions() as session:
            funnel = reports.funnel(session, since=start, sequence=sequence, consultation_url=s.consultation_url)
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
    table = Table("#", "step", "sent", "clicked", "rate", "consultation", "unsubscribed", "bounced")
    for step in funnel.steps:
        table.add_row(str(step.position + 1), step.key, str(step.sent), str(step.clickers), pct(step.click_rate),
                      str(step.goal_clickers), str(step.unsubscribed), str(step.bounced))
    out.print(table)
    if funnel.broadcasts:
        table = Table("broadcast", "template", "audience", "status", "sent", "clicked", "rate", "unsubscribed",
                      "bounced")
        for b in funnel.broadcasts:
            table.add_row(str(b.id), b.template, b.audience, b.status, str(b.sent), str(b.clickers),
                          pct(b.click_rate), str(b.unsubscribed), str(b.bounced))
        out.print(table)


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
