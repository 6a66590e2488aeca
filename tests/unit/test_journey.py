"""The schedule rules, pure, with fixed instants (time is passed in)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from nurture.content.sequences import Sequence, Step
from nurture.sending.journey import Window, key_of, next_send, next_step

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
WINDOW = Window(9 * 60, 17 * 60)


def sequence(*spec: tuple[str, int]) -> Sequence:
    steps = tuple(Step("nurture", key, i, delay, key, "", f"nurture/{key}.html.j2") for i, (key, delay) in
                  enumerate(spec))
    return Sequence("nurture", steps)


SERIES = sequence(("welcome", 0), ("how", 2), ("risks", 5), ("consult", 8))


def done(*keys: str) -> set[str]:
    return {f"seq:nurture:{k}" for k in keys}


def when(seq=SERIES, *, confirmed, now, keys=(), last=None, zone=NY):
    found = next_send(seq, confirmed_at=confirmed, zone=zone, done_keys=done(*keys), last_marketing_at=last,
                      now=now, window=WINDOW)
    return None if found is None else (found[0].key, found[1])


def local(*args, zone=NY) -> datetime:
    return datetime(*args, tzinfo=zone).astimezone(UTC)


def test_first_step_goes_at_once_even_outside_the_window():
    confirmed = local(2026, 12, 1, 22, 30)
    assert when(confirmed=confirmed, now=confirmed) == ("welcome", confirmed)


def test_later_step_waits_for_its_local_day_at_the_window_start():
    confirmed = local(2026, 12, 1, 22, 30)
    sent = confirmed + timedelta(seconds=20)
    assert when(confirmed=confirmed, now=sent, keys=["welcome"], last=sent) == ("how", local(2026, 12, 3, 9, 0))


def test_outside_the_window_the_step_waits_for_the_next_opening():
    confirmed = local(2026, 12, 1, 8, 0)
    late = local(2026, 12, 3, 17, 30)
    assert when(confirmed=confirmed, now=late, keys=["welcome"], last=confirmed) == ("how", local(2026, 12, 4, 9, 0))
    inside = local(2026, 12, 3, 12, 0)
    assert when(confirmed=confirmed, now=inside, keys=["welcome"], last=confirmed) == ("how", inside)


def test_at_most_one_marketing_email_per_local_day_so_downtime_catches_up_one_a_day():
    confirmed = local(2026, 12, 1, 10, 0)
    back = local(2026, 12, 20, 10, 0)  # down for weeks: three steps are overdue
    assert when(confirmed=confirmed, now=back, keys=["welcome"], last=confirmed) == ("how", back)
    assert when(confirmed=confirmed, now=back + timedelta(hours=1), keys=["welcome", "how"], last=back) == (
        "risks", local(2026, 12, 21, 9, 0))


def test_a_newsletter_that_day_pushes_the_sequence_step_to_tomorrow():
    confirmed = local(2026, 12, 1, 10, 0)
    newsletter = local(2026, 12, 3, 9, 5)
    assert when(confirmed=confirmed, now=local(2026, 12, 3, 10, 0), keys=["welcome"], last=newsletter) == (
        "how", local(2026, 12, 4, 9, 0))


def test_spring_forward_keeps_nine_local():
    # US clocks go forward on 2026-03-08: 09:00 EDT is 13:00 UTC, not 14:00.
    confirmed = local(2026, 3, 6, 12, 0)
    step = when(confirmed=confirmed, now=confirmed, keys=["welcome"], last=confirmed)
    assert step == ("how", datetime(2026, 3, 8, 13, 0, tzinfo=UTC))


def test_fall_back_keeps_nine_local():
    # US clocks go back on 2026-11-01: 09:00 EST is 14:00 UTC.
    confirmed = local(2026, 10, 30, 20, 0)
    assert when(confirmed=confirmed, now=confirmed, keys=["welcome"], last=confirmed) == (
        "how", datetime(2026, 11, 1, 14, 0, tzinfo=UTC))


def test_progress_is_by_key_inserted_steps_before_the_furthest_are_skipped():
    edited = sequence(("welcome", 0), ("new-early", 1), ("how", 2), ("new-late", 3), ("risks", 5), ("consult", 8))
    assert next_step(edited, done("welcome", "how")).key == "new-late"
    assert next_step(edited, done("welcome")).key == "new-early"  # not passed yet: they get it


def test_removed_and_reordered_steps_never_send_twice():
    removed = sequence(("welcome", 0), ("risks", 5), ("consult", 8))
    assert next_step(removed, done("welcome", "how")).key == "risks"
    reordered = sequence(("welcome", 0), ("risks", 2), ("how", 5), ("consult", 8))
    assert next_step(reordered, done("welcome", "how")).key == "consult"
    assert next_step(SERIES, done("welcome", "how", "risks", "consult")) is None


def test_finished_subscriber_has_nothing_next():
    confirmed = local(2026, 12, 1, 10, 0)
    assert when(confirmed=confirmed, now=confirmed, keys=["welcome", "how", "risks", "consult"]) is None


def test_window_next_open_and_key():
    zone = ZoneInfo("Asia/Tokyo")
    assert WINDOW.next_open(datetime(2026, 12, 1, 0, 30, tzinfo=UTC), zone) == datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert WINDOW.next_open(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), zone) == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    assert key_of(SERIES.steps[1]) == "seq:nurture:how"
