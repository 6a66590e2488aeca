"""Engine and transactions.

SQLite runs in WAL mode with a busy timeout and foreign keys on. Writes go through
``transaction()``, which on SQLite starts with ``BEGIN IMMEDIATE``: it takes the write lock up
front, so two processes never deadlock upgrading a read to a write (a deferred transaction would
fail at once with "database is locked" instead of waiting out the busy timeout). Within one
process, writers also queue on a Python lock first: SQLite's own busy handler sleeps in growing
steps of up to 100 ms, which under load (the web endpoint and its mail thread) turns into long
stalls, while a Python lock hands over at once. Plain reads use a deferred BEGIN and, in WAL
mode, never wait for a writer. Transactions stay short.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

BUSY_TIMEOUT_MS = 10_000
_writing = threading.local()


def make_engine(url: str, **kwargs) -> Engine:
    """Create the engine for ``url``; on SQLite install the pragmas and the write discipline."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, **kwargs)
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    engine.info_lock = threading.RLock()  # type: ignore[attr-defined]  # in-process writers queue here

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if getattr(_writing, "depth", 0) else "BEGIN")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One short write transaction: commit on success, roll back on any error."""
    lock = getattr(sessions.kw.get("bind"), "info_lock", None)
    _writing.depth = getattr(_writing, "depth", 0) + 1
    try:
        if lock is None:
            with sessions() as session, session.begin():
                yield session
        else:
            with lock, sessions() as session, session.begin():
                yield session
    finally:
        _writing.depth -= 1
