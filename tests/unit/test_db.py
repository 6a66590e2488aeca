"""The write discipline of nurture.db.Database on a real SQLite file."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, text

from nurture.db import Database, make_engine, session_factory, transaction


@pytest.fixture
def db(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    database = session_factory(engine)
    begins: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _record(conn, cursor, statement, *args):
        if statement.startswith("BEGIN"):
            begins.append(statement)

    database.begins = begins  # type: ignore[attr-defined]
    yield database
    engine.dispose()


def test_the_factory_builds_a_database(db: Database) -> None:
    assert isinstance(db, Database)
    assert db.write_lock is not None


def test_a_write_begins_immediate_and_a_read_deferred(db: Database) -> None:
    with transaction(db) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    with db() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 1
    assert db.begins == ["BEGIN IMMEDIATE", "BEGIN"]  # type: ignore[attr-defined]


def test_a_session_opened_inside_a_write_begins_immediate(db: Database) -> None:
    with transaction(db) as outer:
        assert db.writing
        outer.execute(text("INSERT INTO t VALUES (1)"))
    assert not db.writing
    with transaction(db):
        with transaction(db) as inner:  # the same thread re-enters the lock
            inner.execute(text("SELECT 1"))
    assert db.begins == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]  # type: ignore[attr-defined]


def test_an_error_rolls_back_and_leaves_the_write_state(db: Database) -> None:
    with pytest.raises(RuntimeError):
        with transaction(db) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError("boom")
    assert not db.writing
    with db() as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0


def test_writers_in_one_process_queue_on_the_lock(db: Database) -> None:
    entered = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with transaction(db) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            entered.set()
            release.wait(5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    entered.wait(5)
    assert not db.write_lock.acquire(blocking=False)  # type: ignore[union-attr]
    assert not db.writing  # the other thread's write is not this thread's
    threading.Timer(0.1, release.set).start()
    started = time.monotonic()
    with transaction(db) as session:
        order.append("second")
        session.execute(text("INSERT INTO t VALUES (2)"))
    thread.join(5)
    assert order == ["first done", "second"]
    assert time.monotonic() - started < 5


def test_a_plain_sessionmaker_gets_an_ordinary_transaction(tmp_path) -> None:
    from sqlalchemy.orm import sessionmaker

    engine = make_engine(f"sqlite:///{tmp_path / 'plain.sqlite'}")
    with transaction(sessionmaker(engine)) as session:
        assert session.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
