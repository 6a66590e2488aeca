"""Commands about people: importing and exporting them, their data rights, returned mail."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from nurture.cli.common import Fail, app, console, out, runtime, settings

subscribers_app = typer.Typer(no_args_is_help=True, help="Import, export, and people's data rights.")
app.add_typer(subscribers_app, name="subscribers")
bounces_app = typer.Typer(no_args_is_help=True, help="Returned mail and spam complaints.")
app.add_typer(bounces_app, name="bounces")


@bounces_app.command("ingest")
def bounces_ingest(
    source: Annotated[Optional[str], typer.Argument(metavar="PATH", help="A Maildir folder or an mbox file.")] = None,
    imap: Annotated[bool, typer.Option("--imap", help="Read NURTURE_BOUNCE_IMAP_URL instead of PATH.")] = False,
) -> None:
    """Read returned mail and complaints: hard bounces and complaints suppress at once,
    three soft bounces in 15 days suppress too. Only reports tied to an email we sent (or from
    a trusted, DKIM-signed feedback loop) count; the rest are listed as unverified."""
    from pathlib import Path

    from nurture.clock import utcnow
    from nurture.feedback import bounces

    s = settings()
    if imap == (source is not None):
        raise Fail("give either PATH or --imap")
    if imap and not s.bounce_imap_url:
        raise Fail("--imap needs NURTURE_BOUNCE_IMAP_URL (imaps://user:password@host/INBOX)")
    rt = runtime(s)
    try:
        messages = bounces.read_imap(s.bounce_imap_url) if imap else bounces.read_maildir_or_mbox(Path(source))
        report = bounces.ingest(rt.sessions, messages, now=utcnow(), secret=s.secret, from_header=s.mail_from,
                                trusted_senders=s.trusted_feedback_senders)
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

    from nurture.clock import utcnow
    from nurture.people.subscriber_files import CsvImportError, import_csv

    s = settings()
    rt = runtime(s)
    try:
        with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), console=console,
                      transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("import", total=None)
            report = import_csv(
                rt.sessions, file, now=utcnow(), default_timezone=s.timezone, confirmed=confirmed,
                consent_source=consent_source, dry_run=dry_run, confirmations_per_day=s.confirmations_per_day,
                sequence=s.sequence,
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
    from nurture.people.subscriber_files import export_csv

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

    from nurture.people.data_rights import export_personal
    from nurture.people.validation import InvalidInput

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
    from nurture.clock import utcnow
    from nurture.db import transaction
    from nurture.people.data_rights import erase
    from nurture.people.validation import InvalidInput

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
