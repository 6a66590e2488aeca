"""The leases one worker holds: checked in memory, renewed at half-time, lost rows never sent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nurture.sending.leases import Leases

T0 = datetime(2026, 12, 1, 15, 0, tzinfo=timezone.utc)
LEASE = timedelta(seconds=10)


class World:
    """A clock the test moves, and a database that answers renewals with the rows still ours."""

    def __init__(self) -> None:
        self.now = T0
        self.ours: set[int] = set()
        self.renewals: list[datetime] = []

    def renew(self, until: datetime) -> set[int]:
        self.renewals.append(until)
        return set(self.ours)


def leases_over(world: World, ids: set[int]) -> Leases:
    leases = Leases(LEASE, lambda: world.now, world.renew)
    world.ours |= ids
    leases.claimed(ids, world.now + LEASE)
    return leases


def test_a_fresh_lease_is_checked_in_memory():
    world = World()
    leases = leases_over(world, {1, 2})
    world.now += LEASE / 2 - timedelta(milliseconds=1)
    assert leases.still_ours(1) and leases.still_ours(2)
    assert world.renewals == []


def test_at_half_time_every_lease_in_hand_is_renewed_once():
    world = World()
    leases = leases_over(world, {1, 2, 3})
    world.now += LEASE / 2
    assert leases.still_ours(1)
    assert world.renewals == [world.now + LEASE]
    assert leases.still_ours(2)  # the renewal covered it: no second write
    assert len(world.renewals) == 1


def test_a_row_taken_over_by_another_worker_is_never_sent_here():
    world = World()
    leases = leases_over(world, {1, 2})
    world.now += LEASE * 3  # stalled past the lease; another worker took row 2 over meanwhile
    world.ours.discard(2)
    assert leases.still_ours(1)
    assert not leases.still_ours(2)
    assert not leases.still_ours(2)  # and stays lost, without asking the database again
    assert len(world.renewals) == 1


def test_rows_handed_over_are_never_released_rows_not_handed_are():
    world = World()
    leases = leases_over(world, {1, 2, 3, 4})
    assert leases.still_ours(1) and leases.still_ours(2)
    leases.not_handed(2)  # the server was unreachable: nothing of it went out
    leases.done({3})  # suppressed: the person unsubscribed
    assert leases.unhanded() == {2, 4}


def test_rows_done_are_no_longer_ours_to_send():
    world = World()
    leases = leases_over(world, {1})
    leases.done({1})
    assert not leases.still_ours(1)
