"""Bookings from a CSV file (``nurture goal import``): columns email, booked_at.

For a clinic whose booking system cannot call the webhook: an export of its bookings, imported
as often as is convenient. Every row goes through :func:`nurture.people.goals.record_booking`, so
a booking already recorded (the same person at the same instant, however it came in) is counted
as such and changes nothing: importing a file twice, or a longer export that repeats last
week's rows, adds only what is new. Every row that cannot be used is reported with its line and
the rest imported, in one transaction.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from nurture.db import transaction
from nurture.people.goals import Booking, parse_booked_at, record_booking
from nurture.people.subscriber_files import CsvImportError, RejectedRow
from nurture.people.validation import InvalidInput, normalise_email

COLUMNS = ("email", "booked_at")


@dataclass
class BookingImport:
    """What an import did."""

    matched: int = 0  # new bookings of subscribers
    ended: int = 0  # of those, the person's first: their sequence ended
    unmatched: int = 0  # new bookings of addresses nobody subscribed with
    already: int = 0  # recorded before: nothing changed
    rejected: list[RejectedRow] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the terminal."""
        return (f"Imported {self.matched + self.unmatched} new bookings: {self.matched} of subscribers "
                f"({self.ended} of them ended a sequence), {self.unmatched} unmatched (no subscriber has the "
                f"address); {self.already} already recorded, {len(self.rejected)} rejected.")


def import_bookings(sessions: sessionmaker[Session], path: str | Path, *, now: datetime) -> BookingImport:
    """Import the bookings in the CSV file at ``path``. Raises CsvImportError, before writing
    anything, for a file that cannot be read or lacks the columns; bad rows are reported."""
    rows, rejected = _parse(_read(Path(path)), Path(path).name, now=now)
    report = BookingImport(rejected=rejected)
    with transaction(sessions) as session:
        for booking in rows:
            done = record_booking(session, booking, now=now)
            if not done.new:
                report.already += 1
            elif done.matched:
                report.matched += 1
                report.ended += done.ended_sequence
            else:
                report.unmatched += 1
    return report


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CsvImportError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CsvImportError(f"{path.name} is not UTF-8 text (line {line}); save it as CSV UTF-8.") from None
    if "\x00" in text:
        raise CsvImportError(f"{path.name} is not a CSV file (it contains binary data).")
    return text


def _parse(text: str, filename: str, *, now: datetime) -> tuple[list[Booking], list[RejectedRow]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    bookings: list[Booking] = []
    rejected: list[RejectedRow] = []
    try:
        header = next((r for r in reader if any(c.strip() for c in r)), None)
        names = [cell.strip().lower() for cell in header or []]
        missing = [column for column in COLUMNS if column not in names]
        if missing:
            raise CsvImportError(f"{filename}: the first row must name the columns {', '.join(COLUMNS)} "
                                 f"(missing: {', '.join(missing)}).")
        at = {column: names.index(column) for column in COLUMNS}
        previous_end = reader.line_num
        for record in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            cells = {column: record[i].strip() if i < len(record) else "" for column, i in at.items()}
            try:
                if not cells["booked_at"]:
                    raise InvalidInput("booked_at", "booked_at is empty")
                bookings.append(Booking(normalise_email(cells["email"]), parse_booked_at(cells["booked_at"], now=now),
                                        "import"))
            except InvalidInput as exc:
                rejected.append(RejectedRow(line, cells["email"], exc.message))
    except csv.Error as exc:
        raise CsvImportError(f"{filename} is not valid CSV at line {reader.line_num}: {exc}.") from None
    return bookings, rejected
