"""Commands about the sequence's goal: a consultation booked, by hand or from a file of bookings."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from nurture.cli.common import Fail, app, console, out, parse_now, runtime, settings

goal_app = typer.Typer(no_args_is_help=True, help="Bookings of a consultation: the goal that ends the sequence.")
app.add_typer(goal_app, name="goal")


@goal_app.command("booked")
def goal_booked(
    address: Annotated[str, typer.Argument(metavar="EMAIL", help="The address the person booked with.")],
    at: Annotated[Optional[str], typer.Option(
        "--at", help="When it was booked (ISO-8601; without an offset read as UTC). Default: now.")] = None,
) -> None:
    """Record that EMAIL booked a consultation: their sequence ends (queued steps cancelled), the
    newsletter goes on. An address nobody subscribed with is recorded as unmatched."""
    from nurture.clock import utcnow
    from nurture.db import transaction
    from nurture.people.goals import Booking, record_booking
    from nurture.people.validation import InvalidInput, normalise_email

    s = settings()
    now = utcnow()
    booked_at = parse_now(at, "--at", zone=s.timezone, clock=lambda: now)
    try:
        email = normalise_email(address)
        rt = runtime(s)
        try:
            with transaction(rt.sessions) as session:
                done = record_booking(session, Booking(email, booked_at, "cli"), now=now)
        finally:
            rt.close()
    except InvalidInput as exc:
        raise Fail(exc.message) from None
    when = f"{booked_at:%Y-%m-%d %H:%M} UTC"
    if not done.new:
        out.print(f"{email}: this booking ({when}) was recorded already; nothing changed", highlight=False)
    elif not done.matched:
        out.print(f"{email}: no subscriber has this address; the booking ({when}) is recorded as unmatched",
                  highlight=False)
    elif done.ended_sequence:
        out.print(f"{email}: booked {when}; their sequence ended ({done.cancelled} queued step(s) cancelled), "
                  "the newsletter goes on unless they stopped it", highlight=False)
    else:
        out.print(f"{email}: booked {when}; recorded (their sequence had already ended with an earlier booking)",
                  highlight=False)


@goal_app.command("import")
def goal_import(
    file: Annotated[str, typer.Argument(metavar="FILE.csv", help="Columns: email, booked_at (ISO-8601 with offset).")],
) -> None:
    """Import bookings from a CSV file. Every bad row is reported with its line; a booking
    recorded before (the same person at the same time) changes nothing, so importing twice is safe."""
    from rich.markup import escape

    from nurture.clock import utcnow
    from nurture.people.booking_files import import_bookings
    from nurture.people.subscriber_files import CsvImportError

    rt = runtime()
    try:
        report = import_bookings(rt.sessions, file, now=utcnow())
    except CsvImportError as exc:
        raise Fail(str(exc)) from None
    finally:
        rt.close()
    for row in report.rejected:
        console.print(f"line {row.line}: {escape(row.email)}: {escape(row.reason)}", highlight=False)
    out.print(report.summary(), highlight=False)
