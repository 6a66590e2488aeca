"""The studio's journey view: when one subscriber who confirms at a given moment receives each
step, in their time zone. It asks the planner's own rule (:func:`nurture.journey.next_send`),
one step after another, exactly as the sending passes do, so the view cannot drift from what
is sent."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from nurture.content.sequences import Sequence, Step
from nurture.sending.journey import Window, key_of, next_send


@dataclass(frozen=True)
class JourneyRow:
    step: Step
    at: datetime  # local, in the subscriber's zone
    day: int  # local days after the confirmation day
    immediate: bool  # goes at confirmation
    pushed: bool  # later than its delay says: one marketing email a day
    clocks_changed: str | None = None  # "EST → EDT" on the first row after a daylight-saving change


def plan_journey(sequence: Sequence, *, confirmed_at: datetime, zone: ZoneInfo, window: Window) -> list[JourneyRow]:
    """Each step of ``sequence`` for a subscriber who confirms at ``confirmed_at`` (and gets no
    newsletter meanwhile), at the earliest instant a pass would queue it: ``next_send`` asked at
    confirmation, then again the moment each step goes, with that step done and that instant as
    their latest marketing email (which is what a pass records)."""
    rows: list[JourneyRow] = []
    done: set[str] = set()
    last: datetime | None = None
    before = confirmed_at.astimezone(zone)
    first_day = before.date()
    now = confirmed_at
    while (found := next_send(sequence, confirmed_at=confirmed_at, zone=zone, done_keys=done,
                              last_marketing_at=last, now=now, window=window)) is not None:
        step, at = found
        local = at.astimezone(zone)
        changed = f"{before.tzname()} → {local.tzname()}" if local.utcoffset() != before.utcoffset() else None
        rows.append(JourneyRow(step, local, (local.date() - first_day).days, last is None and at == confirmed_at,
                               local.date() > first_day + timedelta(days=step.delay_days), changed))
        done.add(key_of(step))
        last, now, before = at, at, local
    return rows
