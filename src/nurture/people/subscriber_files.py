"""Subscribers in and out of CSV files: import a list the clinic collected, export the list.

An import goes through the same rules as the signup form. Without ``confirmed`` new people get
the normal double opt-in (pending, a confirmation email through the outbox); with it, the
operator vouches for consent obtained elsewhere and says how (``consent_source``), and the
consent ledger records that. An import never brings back an address that unsubscribed, bounced,
complained or was erased, and never changes anyone who exists already, so importing a file twice
(or again after a crash) changes nothing the second time.

The whole file is read and checked before anything is written: a file that is not UTF-8, not CSV
or has the wrong columns is one error and no writes. Rows are then written in batches, each its
own transaction, so a crash leaves whole batches and a re-run completes the rest.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from nurture.config import DEFAULT_SEQUENCE
from nurture.db import transaction
from nurture.models import Status, Subscriber
from nurture.people import address_hashes, new_subscribers, subscribers
from nurture.people.consent_ledger import RequestInfo
from nurture.people.validation import InvalidInput, Signup, email_hash, parse_signup

COLUMNS = ("email", "first_name", "timezone", "consent")
REQUIRED = ("email", "consent")
EXPORT_COLUMNS = (
    "email", "first_name", "timezone", "status", "created_at", "confirmed_at", "wants_series", "wants_newsletter",
)
BATCH_SIZE = 500
_ACTIVE = (Status.pending, Status.confirmed)
_SOURCE_MAX = 64  # ConsentEvent.source
_PREFIX = "import:"
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class CsvImportError(ValueError):
    """The whole import is refused (bad file, bad options); the message says why, for a person."""


class RejectedRow(NamedTuple):
    line: int  # where the row starts in the file, counting the header as line 1
    email: str  # as typed
    reason: str


@dataclass
class ImportReport:
    created: int = 0
    existing: int = 0  # already pending or confirmed: left unchanged
    suppressed: int = 0  # unsubscribed, bounced, complained or erased: never re-subscribed
    rejected: list[RejectedRow] = field(default_factory=list)
    dry_run: bool = False
    confirmed: bool = False  # created confirmed directly (else pending, with a confirmation email)
    confirmations_queued: int = 0

    def summary(self) -> str:
        """One line for the terminal."""
        if self.confirmed:
            how = "confirmed"
        else:
            how = "pending, each sent a confirmation email" if self.dry_run else "pending, confirmation emails queued"
        counts = (
            f"{self.created} new ({how}), {self.existing} already subscribed, "
            f"{self.suppressed} suppressed (unsubscribed, bounced, complained or erased: not re-added), "
            f"{len(self.rejected)} rejected"
        )
        return f"Dry run, nothing written; would import {counts}." if self.dry_run else f"Imported {counts}."


@dataclass(frozen=True)
class ParsedRow:
    line: int
    signup: Signup
    hash: str  # the plain hash: enough to find a repeat within the file, without the database


def import_csv(
    sessions: sessionmaker[Session],
    path_or_file: str | os.PathLike[str] | BinaryIO | TextIO,
    *,
    now: datetime,
    default_timezone: str,
    confirmed: bool = False,
    consent_source: str | None = None,
    dry_run: bool = False,
    confirmations_per_day: int = 3,
    sequence: str = DEFAULT_SEQUENCE,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Import subscribers from a CSV file with columns email, consent (required), first_name,
    timezone. Raises CsvImportError, before writing anything, for a file or options that cannot
    be used; rows that cannot be used are listed in ``report.rejected`` and the rest imported.

    ``on_total`` is called once with the number of rows that will go to the database, then
    ``progress`` after each batch with the number of rows it handled (for a progress bar).
    ``dry_run`` reports what would happen and writes nothing."""
    source = _ledger_source(confirmed, consent_source)
    text, filename = _read_text(path_or_file)
    rows, rejected = parse_rows(text, filename)
    if source is None:
        source = (_PREFIX + filename)[:_SOURCE_MAX]
    report = ImportReport(rejected=rejected, dry_run=dry_run, confirmed=confirmed)
    if on_total is not None:
        on_total(len(rows))
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        counts = _run_batch(sessions, batch, now=now, default_timezone=default_timezone, confirmed=confirmed,
                            source=source, dry_run=dry_run, confirmations_per_day=confirmations_per_day,
                            sequence=sequence)
        for name, value in counts.items():
            setattr(report, name, getattr(report, name) + value)
        if progress is not None:
            progress(len(batch))
    return report


def _ledger_source(confirmed: bool, consent_source: str | None) -> str | None:
    """The consent ledger's ``source`` for a confirmed import (None: the default, by file name)."""
    if not confirmed:
        if consent_source:
            raise CsvImportError("--consent-source goes with --confirmed; without it people confirm by email.")
        return None
    words = (consent_source or "").strip()
    if not words:
        raise CsvImportError(
            "--confirmed needs --consent-source saying how these people gave consent "
            '(for example "paper form at the clinic, 2026-10"), so the consent ledger can show it.'
        )
    if not words.isprintable():
        raise CsvImportError("--consent-source must be one line of text.")
    room = _SOURCE_MAX - len(_PREFIX)
    if len(words) > room:
        raise CsvImportError(f"--consent-source is limited to {room} characters; this one has {len(words)}.")
    return _PREFIX + words


def _read_text(source: str | os.PathLike[str] | BinaryIO | TextIO) -> tuple[str, str]:
    """The file's text (BOM removed) and its name."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            data: bytes | str = path.read_bytes()
        except OSError as exc:
            raise CsvImportError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    else:
        name = Path(str(getattr(source, "name", "") or "upload.csv")).name
        data = source.read()
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise CsvImportError(
                f"{name} is not UTF-8 text (line {line}, byte {exc.start}). "
                'Save it from the spreadsheet as "CSV UTF-8 (comma delimited)".'
            ) from None
    text = data.removeprefix("\ufeff")
    if "\x00" in text:
        raise CsvImportError(f"{name} is not a CSV file (it contains binary data).")
    return text, name


def parse_rows(text: str, filename: str = "file") -> tuple[list[ParsedRow], list[RejectedRow]]:
    """Check every row by the signup form's rules; return the usable rows and the rejected ones.
    Raises CsvImportError for a problem with the file as a whole."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = _header(reader, filename)
        rows: list[ParsedRow] = []
        rejected: list[RejectedRow] = []
        first_seen: dict[str, int] = {}
        previous_end = reader.line_num
        for record in reader:
            line, previous_end = previous_end + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue  # blank lines and the empty rows spreadsheets leave at the end
            row = _row(header, record, line, first_seen)
            if isinstance(row, RejectedRow):
                rejected.append(row)
            else:
                first_seen[row.hash] = line
                rows.append(row)
    except csv.Error as exc:
        raise CsvImportError(f"{filename} is not valid CSV at line {reader.line_num}: {exc}.") from None
    return rows, rejected


def _header(reader: Iterator[list[str]], filename: str) -> list[str]:
    expected = ", ".join(COLUMNS)
    for record in reader:
        if any(cell.strip() for cell in record):
            break
    else:
        raise CsvImportError(f"{filename} is empty; its first line must name the columns: {expected}.")
    header = [cell.strip().lower() for cell in record]
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        if any("@" in name for name in unknown):
            raise CsvImportError(
                f"The first line of {filename} looks like data; it must name the columns: {expected}."
            )
        hint = ""
        if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
            hint = " The columns seem to be separated by something other than commas; save as comma-separated CSV."
        names = ", ".join(repr(name) for name in unknown)
        raise CsvImportError(f"Unknown column(s) in {filename}: {names}. The columns are: {expected}.{hint}")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise CsvImportError(f"Column(s) named twice in {filename}: {', '.join(twice)}.")
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise CsvImportError(f"Missing column(s) in {filename}: {', '.join(missing)}.")
    return header


def _row(header: list[str], record: list[str], line: int, first_seen: dict[str, int]) -> ParsedRow | RejectedRow:
    typed = record[header.index("email")] if len(record) > header.index("email") else ""
    extra = record[len(header):]
    if len(record) < len(header) or any(cell.strip() for cell in extra):
        return RejectedRow(line, typed, f"has {len(record)} values; the header has {len(header)} columns")
    values = dict(zip(header, record))
    consent = values["consent"].strip()
    data = {
        "email": values["email"],
        "first_name": values.get("first_name", ""),
        "timezone": values.get("timezone", "").strip(),
        "consent": consent,
    }
    try:
        signup = parse_signup(data)
    except InvalidInput as exc:
        return RejectedRow(line, typed, _reason(exc, consent))
    key = email_hash(signup.email)
    if key in first_seen:
        return RejectedRow(line, typed, f"duplicate of line {first_seen[key]}")
    return ParsedRow(line, signup, key)


def _reason(exc: InvalidInput, consent: str) -> str:
    if exc.field != "consent":
        return exc.message
    if not consent:
        return "no consent: the consent column is empty"
    if consent.lower() in ("false", "off", "no", "0"):
        return f"no consent: the consent column says {consent!r}"
    return f"consent must be yes, true or 1 (or no, false, 0), not {consent!r}"


def _run_batch(sessions: sessionmaker[Session], batch: Sequence[ParsedRow], **options) -> dict[str, int]:
    """One batch in one transaction. A concurrent signup of the same address can make the insert
    collide (PostgreSQL); the batch is then re-read and retried, and that address counts as existing."""
    for attempt in range(3):
        try:
            if options["dry_run"]:
                with sessions() as session:  # reads only; closed with a rollback
                    return _import_batch(session, batch, **options)
            with transaction(sessions) as session:
                return _import_batch(session, batch, **options)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _import_batch(
    session: Session,
    batch: Sequence[ParsedRow],
    *,
    now: datetime,
    default_timezone: str,
    confirmed: bool,
    source: str,
    dry_run: bool,
    confirmations_per_day: int,
    sequence: str,
) -> dict[str, int]:
    hashes = {row.line: address_hashes.hashes_to_match(session, row.signup.email) for row in batch}
    known = dict(
        session.execute(
            select(Subscriber.email_hash, Subscriber.status)
            .where(Subscriber.email_hash.in_([h for pair in hashes.values() for h in pair]))
        ).all()
    )
    counts = {"created": 0, "existing": 0, "suppressed": 0, "confirmations_queued": 0}
    new: list[ParsedRow] = []
    for row in batch:
        status = next((known[h] for h in hashes[row.line] if h in known), None)
        if status is None:
            new.append(row)
        elif status in _ACTIVE:
            counts["existing"] += 1
        else:
            # Unsubscribed, bounced, complained or erased (the tombstone keeps the hash): only the
            # person can opt in again, through the form; an old list never re-adds them.
            counts["suppressed"] += 1
    counts["created"] = len(new)
    if dry_run or not new:
        return counts
    if confirmed:
        new_subscribers.add_confirmed(session, [r.signup for r in new], now=now, source=source,
                                      default_timezone=default_timezone, sequence=sequence)
        return counts
    request = RequestInfo(ip=None, user_agent=None, source=source)
    for row in new:
        outcome = subscribers.subscribe(session, row.signup, now=now, request=request,
                                        default_timezone=default_timezone,
                                        confirmations_per_day=confirmations_per_day, sequence=sequence)
        counts["confirmations_queued"] += outcome.confirmation_queued
    return counts


def export_csv(session: Session, out: TextIO) -> int:
    """Write every subscriber who still has an address (erased people have none) as CSV; return
    how many rows. Rows are streamed, so a large list is never all in memory. Times are ISO 8601
    UTC. A cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice
    against CSV injection: names are typed by strangers)."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    query = (
        select(
            Subscriber.email, Subscriber.first_name, Subscriber.timezone, Subscriber.status, Subscriber.created_at,
            Subscriber.confirmed_at, Subscriber.wants_series, Subscriber.wants_newsletter,
        )
        .where(Subscriber.email.is_not(None), Subscriber.status != Status.erased)
        .order_by(Subscriber.id)
        .execution_options(yield_per=1000)
    )
    count = 0
    for email, first_name, zone, status, created_at, confirmed_at, series, newsletter in session.execute(query):
        writer.writerow([
            _cell(email), _cell(first_name or ""), zone, status.value, created_at.isoformat(),
            confirmed_at.isoformat() if confirmed_at else "", _bool(series), _bool(newsletter),
        ])
        count += 1
    return count


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _bool(value: bool) -> str:
    return "true" if value else "false"
