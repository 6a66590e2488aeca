"""A hand-counted population for the impact preview (tests/integration/test_impact.py, the studio's
panel in tests/browser/test_studio_impact.py): nineteen people brought to every stage of the
sequence by real sending passes on a copy of the shipped templates. Who is where is told in
tests/integration/test_impact.py's docstring."""

from __future__ import annotations

import hashlib
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import inspect, text

from nurture.db import transaction
from nurture.people import subscribers
from nurture.people.validation import Signup, normalise_email
from nurture.runtime import Runtime
from nurture.sending.transports import MemoryTransport

from conftest import TEMPLATES, make_settings
from factories import REQUEST, confirmed

CHICAGO = ZoneInfo("America/Chicago")
START = datetime(2026, 11, 28, 15, 0, tzinfo=timezone.utc)  # 09:00 in Chicago
NOW = datetime(2026, 12, 9, 18, 0, tzinfo=timezone.utc)  # Wednesday, 12:00 in Chicago


def at_nine(day: int, month: int = 12) -> datetime:
    """09:00 in Chicago on that day (CST: 15:00 UTC)."""
    return datetime(2026, month, day, 15, 0, tzinfo=timezone.utc)


# (label, count, confirmed at, zone, unsubscribed at)
POPULATION = [
    ("finished", 3, at_nine(28, 11), "America/Chicago", None),
    ("invite-next", 2, at_nine(3), "America/Chicago", None),
    ("after-how", 4, at_nine(6), "America/Chicago", None),
    ("after-how-tokyo", 1, at_nine(6), "Asia/Tokyo", None),
    ("welcome-only", 3, at_nine(8), "America/Chicago", None),
    ("welcome-only-auckland", 1, at_nine(8), "Pacific/Auckland", None),
    ("today", 2, at_nine(9), "America/Chicago", None),
    ("left", 2, at_nine(6), "America/Chicago", at_nine(7) + timedelta(hours=2)),
]


def build_population(tmp_path: Path, database_url: str) -> tuple[Runtime, Path]:
    """The people of POPULATION (and one who never confirmed), brought to NOW by real passes over a
    copy of the shipped templates; the runtime and the copy's folder."""
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    # The four numbered steps the hand counts are made of: the conditional reminder after the
    # invitation (who gets it depends on clicks and on the consent wording) is left out here;
    # test_impact.py's last test puts it back and checks how the preview speaks of it.
    (templates / "nurture" / "45-invite-reminder.html.j2").unlink()
    rt = Runtime(make_settings(tmp_path, database_url, templates_dir=str(templates)),
                 transport_override=MemoryTransport())
    events = sorted(
        [(when, "confirm", f"{label}-{i}@example.com", zone) for label, count, when, zone, _ in POPULATION
         for i in range(count)]
        + [(left, "leave", f"{label}-{i}@example.com", zone) for label, count, _, zone, left in POPULATION
           if left for i in range(count)])
    ids: dict[str, int] = {}
    instant = START
    while instant <= NOW:
        while events and events[0][0] <= instant:
            when, what, address, zone = events.pop(0)
            if what == "confirm":
                ids[address] = confirmed(rt.sessions, address, when, zone)
            else:
                with transaction(rt.sessions) as session:
                    subscribers.unsubscribe(session, ids[address], now=when, request=REQUEST)
        rt.sender().run_pass(instant)
        instant += timedelta(hours=3)
    _pending(rt)
    return rt, templates


def _pending(rt: Runtime) -> None:
    with transaction(rt.sessions) as session:
        subscribers.subscribe(session, Signup(normalise_email("pending@example.com"), None, "America/Chicago", None,
                                              False), now=NOW, request=REQUEST, default_timezone="America/Chicago",
                              confirmations_per_day=3)


def checksum(rt: Runtime) -> tuple[dict[str, int], str]:
    """Rows per table and a hash of every row of every table, in key order."""
    counts, digest = {}, hashlib.sha256()
    with rt.engine.connect() as connection:
        for table in sorted(inspect(connection).get_table_names()):
            rows = connection.execute(text(f"SELECT * FROM {table}")).all()
            counts[table] = len(rows)
            for row in sorted(repr(tuple(row)) for row in rows):
                digest.update(row.encode())
    return counts, digest.hexdigest()


def chicago_day(instant: datetime) -> date:
    return instant.astimezone(CHICAGO).date()


def edit(path: Path, old: str, new: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert old in source, (path, old)
    path.write_text(source.replace(old, new, 1), encoding="utf-8")
