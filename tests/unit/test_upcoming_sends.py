"""journey.upcoming_sends: every step a person has still to get and when, by next_send's own rule
(the impact preview asks it; the studio's journey asks next_send the same way)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from nurture.content.sequences import Sequence, Step
from nurture.sending.journey import Window, key_of, upcoming_sends
from nurture.web.studio_journey import plan_journey

CHICAGO, TOKYO = ZoneInfo("America/Chicago"), ZoneInfo("Asia/Tokyo")
WINDOW = Window()


def sequence(*delays: int) -> Sequence:
    return Sequence("nurture", tuple(Step("nurture", f"s{n}", n, delay, f"Subject {n}", "", f"nurture/{n}.html.j2")
                                     for n, delay in enumerate(delays)))


def local(day: int, hour: int, zone=CHICAGO) -> datetime:
    return datetime(2026, 12, day, hour, 0, tzinfo=zone).astimezone(timezone.utc)


def test_from_confirmation_it_is_the_whole_journey_the_studio_shows():
    seq = sequence(0, 2, 5)
    confirmed = local(1, 20)  # after the window: the welcome still goes at once
    found = upcoming_sends(seq, confirmed_at=confirmed, zone=CHICAGO, done_keys=set(), last_marketing_at=None,
                           now=confirmed, window=WINDOW)
    assert [(s.key, at) for s, at in found] == [("s0", confirmed), ("s1", local(3, 9)), ("s2", local(6, 9))]
    journey = plan_journey(seq, confirmed_at=confirmed, zone=CHICAGO, window=WINDOW)
    assert [(r.step.key, r.at) for r in journey] == [(s.key, at) for s, at in found]


def test_midway_it_continues_after_the_furthest_step_one_a_day_in_their_zone():
    seq = sequence(0, 1, 2, 3)
    confirmed = local(1, 9, TOKYO)
    done = {key_of(seq.steps[0])}
    # Back after a week away: the rest catch up one a day, from now, in the window of their day.
    now = local(9, 12, TOKYO)
    found = upcoming_sends(seq, confirmed_at=confirmed, zone=TOKYO, done_keys=done, last_marketing_at=confirmed,
                           now=now, window=WINDOW)
    assert [(s.key, at) for s, at in found] == [("s1", now), ("s2", local(10, 9, TOKYO)), ("s3", local(11, 9, TOKYO))]
    # A step inserted before their furthest step is not theirs: only what follows it.
    assert [s.key for s, _ in upcoming_sends(seq, confirmed_at=confirmed, zone=TOKYO, done_keys={key_of(seq.steps[2])},
                                             last_marketing_at=confirmed + timedelta(days=2), now=now,
                                             window=WINDOW)] == ["s3"]


def test_finished_is_nothing():
    seq = sequence(0, 2)
    assert upcoming_sends(seq, confirmed_at=local(1, 9), zone=CHICAGO, done_keys={key_of(s) for s in seq.steps},
                          last_marketing_at=local(3, 9), now=local(5, 9), window=WINDOW) == []
