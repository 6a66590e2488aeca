"""Addresses are found by keyed hash, the key read once per database, rows from before the key too."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import event, text

from nurture.db import make_engine, session_factory, transaction
from nurture.people.address_hashes import PepperMissing, find_by_email, hashes_to_match, stored_hash
from nurture.people.validation import email_hash

from factories import confirmed

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture
def db(sqlite_url):
    engine = make_engine(sqlite_url)
    yield session_factory(engine)
    engine.dispose()


def test_the_stored_hash_is_keyed_and_the_plain_one_still_matches(db) -> None:
    with db() as session:
        keyed, plain = hashes_to_match(session, "ann@example.com")
        assert keyed == stored_hash(session, "ann@example.com") and plain == email_hash("ann@example.com")
        assert keyed != plain


def test_find_by_email_prefers_the_keyed_row(db) -> None:
    ann = confirmed(db, "ann@example.com", T0)
    with transaction(db) as session:  # a row an old process wrote with the plain hash, mid-upgrade
        session.execute(text("INSERT INTO subscribers (email, email_hash, timezone, status, wants_series, "
                             "wants_newsletter, sequence, tags, created_at, updated_at, status_changed_at, "
                             "confirm_round, next_due_at) SELECT email, :plain, timezone, status, wants_series, "
                             "wants_newsletter, sequence, tags, created_at, updated_at, status_changed_at, "
                             "confirm_round, next_due_at FROM subscribers WHERE id = :id"),
                        {"plain": email_hash("ann@example.com"), "id": ann})
    with db() as session:
        assert find_by_email(session, "ann@example.com").id == ann
        assert find_by_email(session, "bo@example.com") is None


def test_the_pepper_is_read_once_for_reads_and_writes_alike(db) -> None:
    reads = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: reads.append(1) if "app_secrets" in statement else None)
    with transaction(db) as session:
        stored_hash(session, "a@example.com")
    with db() as session:
        stored_hash(session, "b@example.com")
    assert len(reads) == 1  # the write session's bind is a variant of the engine: same pool, same pepper


def test_a_database_without_the_pepper_says_how_to_fix_it(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE app_secrets (name VARCHAR PRIMARY KEY, value VARCHAR)"))
    with session_factory(engine)() as session, pytest.raises(PepperMissing, match="nurture db upgrade"):
        stored_hash(session, "a@example.com")
    engine.dispose()
