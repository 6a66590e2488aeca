"""The shared sending budget's arithmetic and the pacer that draws from it, with an injected clock."""

import pytest

from nurture.sending.pass_summary import DatabaseDown
from nurture.sending.ratelimit import SharedPacer
from nurture.sending.send_budget import MemoryBudget, buckets_for, give_back, grant_size, take


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_a_new_bucket_starts_full_and_grants_up_to_its_capacity():
    (second,) = buckets_for(20, 0)
    assert grant_size(20, 0) == 5 and second.capacity == 5
    granted, levels, retry = take([second], {}, want=8, now=0.0)
    assert (granted, retry) == (5, 0.0) and levels["second"] == (0.0, 0.0)


def test_an_empty_bucket_says_when_a_grant_is_there_and_refills_at_its_rate():
    buckets = buckets_for(20, 0)
    granted, levels, _ = take(buckets, {}, want=5, now=0.0)
    granted, same, retry = take(buckets, levels, want=5, now=0.1)  # 2 tokens back: not a whole grant yet? 2 are
    assert granted == 2 and retry == 0.0
    granted, _, retry = take(buckets, same, want=5, now=0.1)
    assert granted == 0 and retry == pytest.approx(5 / 20)
    # Never above capacity, however long it stood.
    assert take(buckets, same, want=50, now=1000.0)[0] == 5


def test_the_hourly_quota_holds_over_any_hour():
    buckets = buckets_for(0, 120)  # burst: two (a minute's quota), refill 119/3600 a second
    levels, sent, now = {}, [], 0.0
    while now < 3 * 3600:
        granted, levels, retry = take(buckets, levels, want=1, now=now)
        if granted:
            sent.append(now)
        else:
            now += retry
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 3600) <= 120
    assert len(sent) >= 3 * 119  # and it lets nearly the whole quota through


def test_a_quota_of_one_an_hour_sends_one_an_hour():
    buckets = buckets_for(0, 1)
    granted, levels, _ = take(buckets, {}, want=1, now=0.0)
    assert granted == 1
    assert take(buckets, levels, want=1, now=3599.0)[0] == 0
    assert take(buckets, levels, want=1, now=3600.0)[0] == 1


def test_both_limits_at_once_grant_what_the_emptier_allows():
    buckets = buckets_for(40, 7200)  # 40 a second, but 2 a second in the long run: grants of one
    assert grant_size(40, 7200) == 1
    levels, sent, now = {}, [], 0.0
    while now < 60:
        granted, levels, retry = take(buckets, levels, want=1, now=now)
        if granted:
            sent.append(now)
        else:
            now += retry
    # The hourly bucket's burst (a minute's quota, 120) goes at 40 a second, then its refill binds.
    assert sent[119] == pytest.approx(119 / 40)
    assert len(sent) == pytest.approx(120 + 60 * (7200 + 1 - 120) / 3600, abs=1)


def test_given_back_sends_return_to_the_bucket_but_never_above_capacity():
    buckets = buckets_for(20, 0)
    _, levels, _ = take(buckets, {}, want=5, now=0.0)
    assert give_back(buckets, levels, 3, now=0.0)["second"][0] == 3
    assert give_back(buckets, levels, 3, now=10.0)["second"][0] == 5


def test_a_clock_behind_the_rows_refills_nothing():
    buckets = buckets_for(20, 0)
    _, levels, _ = take(buckets, {}, want=5, now=100.0)
    granted, after, _ = take(buckets, levels, want=5, now=99.0)
    assert granted == 0
    granted, after, _ = take(buckets, levels, want=5, now=100.05)
    assert granted == 1 and after["second"][1] == 100.05


def pacers(count, per_second=20.0, per_hour=0):
    clock, budget = FakeClock(), MemoryBudget()
    return clock, budget, [SharedPacer(budget, per_second, per_hour, clock=clock, local_clock=clock, sleep=clock.sleep)
                           for _ in range(count)]


def test_three_pacers_on_one_budget_keep_its_rate_together():
    clock, _, three = pacers(3)
    start = clock.now
    for _ in range(100):
        for pacer in three:
            pacer.wait()
    # 300 sends at 20/s together (each pacer alone would allow 20/s): the first grant is the
    # burst, the rest come at the budget's rate.
    assert clock.now - start == pytest.approx((300 - 5) / 20, rel=0.05)


def test_a_grant_left_by_a_dead_sender_holds_the_others_back_one_grant_at_most():
    clock, budget, (dead, alive) = pacers(2)
    for _ in range(5):  # the whole bucket is dead's, and it never comes back
        dead.wait()
    dead._left = 4
    start = clock.now
    alive.wait()
    assert clock.now - start <= 5 / 20 + 1e-9


def test_what_is_left_of_a_grant_is_given_back_at_the_end_of_a_pass():
    clock, budget, (first, second) = pacers(2)
    first.wait()  # takes 5, uses 1
    first.release()
    start = clock.now
    for _ in range(4):
        second.wait()
    # Only the local spacing of 20/s: the 4 given back were there at once (else: a quarter second more).
    assert clock.now - start == pytest.approx(3 / 20)


def test_an_expired_grant_is_given_back_and_a_fresh_one_taken():
    clock, budget, (pacer,) = pacers(1)
    pacer.wait()
    assert pacer._left == 4
    clock.now += pacer.grant_ttl + 1
    pacer.wait()
    assert pacer._left == 4 and budget.levels["second"][0] == 0  # the old four went back, a full five came out


def test_the_database_gone_stops_the_pass_in_one_line():
    from sqlalchemy.exc import OperationalError

    class Down:
        def take(self, *args):
            raise OperationalError("take", {}, Exception("connection refused"))

    pacer = SharedPacer(Down(), 20, 0, patience=0.0)
    with pytest.raises(DatabaseDown, match="sending budget"):
        pacer.wait()


def test_no_limit_means_no_budget_at_all(tmp_path):
    from nurture.config import load_settings
    from nurture.runtime import Runtime
    from nurture.sending.ratelimit import Pacer

    settings = load_settings({"NURTURE_SECRET_KEY": "k", "NURTURE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    runtime = Runtime(settings)
    assert type(runtime.pacer) is Pacer
    assert "engine" not in runtime.__dict__  # not even an engine for it


def test_a_sender_waiting_for_the_budget_keeps_its_leases_alive():
    clock, _, (other, waiting) = pacers(2)
    other.wait()  # takes the whole bucket: empty for a quarter second
    calls = []
    waiting.wait(keep_alive=lambda: calls.append(clock.now))
    assert calls  # looked at its leases while it waited


def test_leases_keep_renews_only_once_half_is_used():
    from datetime import datetime, timedelta, timezone

    from nurture.sending.leases import Leases

    now = [datetime(2026, 12, 1, tzinfo=timezone.utc)]
    renewed = []
    leases = Leases(timedelta(seconds=10), lambda: now[0], lambda until: renewed.append(until) or {1})
    leases.claimed([1], now[0] + timedelta(seconds=10))
    leases.keep()
    assert renewed == []
    now[0] += timedelta(seconds=6)
    leases.keep()
    assert renewed == [now[0] + timedelta(seconds=10)]
